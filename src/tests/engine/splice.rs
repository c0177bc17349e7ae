//! Bulk transfers through splice(2), on both engines: with `--splice on`
//! a 4 MiB echo moves through pipes from the worker's pool (they stay open
//! in the pool afterwards, and show in `/proc/<pid>/fd`), with `--splice
//! off` no pipe is ever opened; either way the bytes arrive whole, in
//! order, and counted.

use super::*;

/// The pipes `pid` has open.
fn pipes(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("pipe:"))
        .count()
}

/// 4 MiB up and echoed back down at once through an edge on `engine` with
/// `splice` on or off; returns the pipes the edge opened on the way.
async fn bulk_echo(engine: &str, splice: &str) -> usize {
    let (_dir, db, _be) = one_backend().await;
    let args = edge_args(
        &db,
        &["--engine", engine, "--splice", splice, "--workers", "1"],
    );
    let edge = Edge::start(&args);
    ready(&edge).await;
    let before = pipes(edge.pid());

    let n: u64 = 4 << 20;
    let mut c = connect_as(edge.addr, sample_address("GB")).await;
    let line = greeting_line(&mut c).await;
    assert!(line.starts_with("backend=be "), "{line}");
    let (mut r, mut w) = tokio::io::split(c);
    let writer = tokio::spawn(async move {
        w.write_all(b"echo\n").await.unwrap();
        write_pattern(&mut w, n).await.unwrap();
        w.shutdown().await.unwrap();
        w
    });
    let echoed = tokio::time::timeout(GIVE_UP, read_pattern(&mut r))
        .await
        .expect("the echo ends");
    assert_eq!(
        echoed.unwrap(),
        Some(n),
        "{engine}, splice {splice}: the echo came back whole and in order, then end-of-file"
    );
    let _w = writer.await.unwrap();
    counted(
        &edge,
        r#"edge_bytes_total{direction="up"}"#,
        (b"echo\n".len() as u64 + n) as f64,
    )
    .await;
    counted(
        &edge,
        r#"edge_bytes_total{direction="down"}"#,
        (line.len() as u64 + n) as f64,
    )
    .await;
    pipes(edge.pid()).saturating_sub(before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_transfer_is_spliced_through_pooled_pipes_on_both_engines_unless_splice_is_off() {
    for engine in ["tokio", "epoll"] {
        let opened = bulk_echo(engine, "on").await;
        assert!(
            opened >= 2,
            "--engine {engine} --splice on: a 4 MiB echo opened {opened} pipe descriptors, none spliced"
        );
        let opened = bulk_echo(engine, "off").await;
        assert_eq!(
            opened, 0,
            "--engine {engine} --splice off: pipes were opened"
        );
    }
}
