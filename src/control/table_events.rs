//! The routing table's changes as async events: [`subscribe`] hands each
//! change the table applies (its generation and diff) to a channel, so that
//! the tasks that follow routing.db (active health checks, the WireGuard
//! device) wake when it changes instead of polling its generation.

use geoedge_routing::{Applied, RoutingTable};
use tokio::sync::mpsc;

/// The changes of one table, from the subscription on.
#[derive(Debug)]
pub struct TableChanges {
    /// Fed by the table's subscriber callback.
    rx: mpsc::UnboundedReceiver<Applied>,
}

/// Subscribes to `table`'s changes. The subscription ends when the
/// returned value drops (the table forgets it at its next change).
pub fn subscribe(table: &RoutingTable) -> TableChanges {
    let (tx, rx) = mpsc::unbounded_channel();
    table.subscribe(move |applied| tx.send(applied.clone()).is_ok());
    TableChanges { rx }
}

impl TableChanges {
    /// Waits for the next change, then takes every change queued behind it
    /// too (a burst of reloads is handled once); `None` once the table is
    /// gone.
    pub async fn changed(&mut self) -> Option<Vec<Applied>> {
        let first = self.rx.recv().await?;
        let mut all = vec![first];
        while let Ok(more) = self.rx.try_recv() {
            all.push(more);
        }
        Some(all)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use geoedge_routing::raw::{BackendRow, RawTable};

    use super::*;

    fn rows(ids: &[&str]) -> RawTable {
        RawTable {
            schema_version: 1,
            backends: ids
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    let mut r = BackendRow::new(id, "eu", "10.0.0.1", 8080 + i as i64, 10, 20);
                    r.rowid = i as i64;
                    r
                })
                .collect(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_subscriber_wakes_on_each_change_and_takes_a_burst_at_once() {
        let table = RoutingTable::from_raw(&rows(&["a"]), 0).unwrap();
        let mut changes = subscribe(&table);
        table.apply(&rows(&["a", "b"]), 0).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), changes.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].generation, 2);
        assert_eq!(got[0].diff.added.len(), 1);
        table.apply(&rows(&["b"]), 0).unwrap();
        table.apply(&rows(&["b", "c"]), 0).unwrap();
        let got = changes.changed().await.unwrap();
        let generations: Vec<u64> = got.iter().map(|a| a.generation).collect();
        assert_eq!(generations, [3, 4]);
        // Nothing more until the next change.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), changes.changed())
                .await
                .is_err()
        );
    }
}
