use super::*;

fn report(pop: &str, revision: Option<u64>, reported_at: u64, diverged: bool) -> PopStatus {
    PopStatus {
        pop: pop.into(),
        revision: revision.map(Revision),
        sha256: None,
        installed_at: revision.map(|_| 100),
        reported_at,
        diverged,
        error: None,
    }
}

#[test]
fn pops_are_current_behind_diverged_or_silent() {
    let reports = [
        report("sin", Some(7), 995, false),
        report("fra", Some(7), 990, false),
        report("iad", Some(5), 999, false),
        report("gru", Some(7), 900, false),
        report("nrt", Some(7), 998, true),
        report("new", None, 999, false),
    ];
    let rows = rows(Some(Revision(7)), &reports, 1000, Duration::from_secs(30));
    let got: Vec<(&str, State, u64, u64)> = rows
        .iter()
        .map(|r| (r.pop.as_str(), r.state, r.age_seconds, r.behind_by))
        .collect();
    assert_eq!(
        got,
        [
            ("fra", State::Current, 10, 0),
            ("gru", State::Silent, 100, 0),
            ("iad", State::Behind, 1, 2),
            ("new", State::Behind, 1, 7),
            ("nrt", State::Diverged, 2, 0),
            ("sin", State::Current, 5, 0),
        ]
    );
    let text = render(&rows);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6);
    assert!(lines[0].starts_with("fra        7 "), "{text}");
    assert!(lines[2].contains("behind (by 2)"), "{text}");
    assert!(lines[3].starts_with("new        - "), "{text}");
    let json = serde_json::to_value(&rows).unwrap();
    assert_eq!(json[0]["pop"], "fra");
    assert_eq!(json[0]["revision"], 7);
    assert_eq!(json[0]["age_seconds"], 10);
    assert_eq!(json[1]["state"], "silent");
}

#[test]
fn a_clock_behind_the_reporter_gives_age_zero_not_an_overflow() {
    let rows = rows(
        None,
        &[report("fra", Some(1), 2000, false)],
        1000,
        Duration::from_secs(30),
    );
    assert_eq!(rows[0].age_seconds, 0);
    assert_eq!(rows[0].state, State::Current);
}
