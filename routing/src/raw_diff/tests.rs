use super::*;
use crate::loader;

#[test]
fn rows_added_removed_and_changed_are_named_by_table_and_key() {
    let old = loader::sample();
    let mut new = old.clone();
    assert!(diff(&old, &new).is_empty());
    assert_eq!(diff(&old, &new).render(), "  no row changed\n");
    // Changed: a weight; removed: the last backend; added: a copy under a
    // new id; the rowid alone is no change.
    new.backends[0].weight = Value::Integer(77);
    new.backends[1].rowid += 100;
    let gone = new.backends.pop().unwrap();
    let mut extra = gone.clone();
    extra.id = Value::Text("brand-new".into());
    new.backends.push(extra);
    if let Some(c) = new.country_regions.as_mut() {
        c.remove(0);
    }
    let d = diff(&old, &new);
    let b = &d.tables[0];
    assert_eq!(b.table, "backends");
    assert_eq!(b.added, ["brand-new"]);
    assert_eq!(b.removed, [key(&gone.id)]);
    assert_eq!(b.changed, [key(&old.backends[0].id)]);
    let c = &d.tables[2];
    assert_eq!(c.table, "country_regions");
    if old.country_regions.as_ref().is_some_and(|c| !c.is_empty()) {
        assert_eq!(c.removed.len(), 1);
    }
    let text = d.render();
    assert!(
        text.contains("backends: 1 added, 1 removed, 1 changed"),
        "{text}"
    );
    assert!(text.contains("    + brand-new"), "{text}");
    // Against nothing published, every row is added.
    let all = diff(&RawTable::default(), &old);
    assert_eq!(all.tables[0].added.len(), old.backends.len());
}

#[test]
fn apps_and_sni_routes_are_diffed_by_app_and_hostname() {
    use crate::raw::{AppRow, SniRouteRow};
    let old = loader::sample();
    let mut new = old.clone();
    new.apps.push(AppRow {
        rowid: 1,
        app: "default".into(),
        client_max_connections: 5.into(),
        client_rate: Value::Null,
        client_rate_period_seconds: Value::Null,
    });
    new.sni_routes.push(SniRouteRow {
        rowid: 1,
        hostname: "*.example.com".into(),
        app: "default".into(),
    });
    let d = diff(&old, &new);
    let names: Vec<_> = d.tables.iter().map(|t| t.table).collect();
    assert_eq!(
        names,
        [
            "backends",
            "regions",
            "country_regions",
            "wg_peers",
            "apps",
            "sni_routes"
        ]
    );
    assert_eq!(d.tables[4].added, ["default"]);
    assert_eq!(d.tables[5].added, ["*.example.com"]);
    let mut newer = new.clone();
    newer.apps[0].client_max_connections = 0.into();
    newer.sni_routes[0].rowid = 7;
    let text = diff(&new, &newer).render();
    assert_eq!(
        text,
        "  apps: 0 added, 0 removed, 1 changed\n    ~ default\n"
    );
}
