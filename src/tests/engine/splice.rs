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
    let _halves = echo_whole(c, n, &format!("--engine {engine} --splice {splice}")).await;
    counted_bytes(&edge, b"echo\n".len() as u64 + n, line.len() as u64 + n).await;
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
