//! Tests of the batched UDP socket against real sockets on loopback.

use super::*;

/// Our socket (the caller runs inside a tokio runtime) and a plain
/// peer socket.
fn pair() -> (Udp, std::net::UdpSocket) {
    let udp = open(0).unwrap();
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    (udp, peer)
}

fn local(udp: &Udp) -> SocketAddr {
    let port = udp.socket.local_addr().unwrap().port();
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn send_all(batch: &mut SendBatch, udp: &Udp) -> u64 {
    let mut failed = 0;
    loop {
        match batch.send(udp, &mut failed) {
            Ok(()) => return failed,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test]
async fn the_socket_gets_large_buffers_and_speaks_both_families() {
    let (udp, _) = pair();
    let sock = socket2::SockRef::from(&udp.socket);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Linux reports twice the size set.
        assert!(sock.recv_buffer_size().unwrap() >= SOCKET_BUFFER);
        assert!(sock.send_buffer_size().unwrap() >= SOCKET_BUFFER);
    }
    assert_eq!(udp.socket.local_addr().unwrap().ip().is_ipv6(), udp.v6);
    assert_eq!(
        canonical("[::ffff:192.0.2.1]:5".parse().unwrap()),
        "192.0.2.1:5".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        canonical("[fd00::1]:5".parse().unwrap()),
        "[fd00::1]:5".parse::<SocketAddr>().unwrap()
    );
}

/// Runs of equal sizes become GSO messages; every datagram arrives on
/// its own at a receiver without GRO, in order, with its own length.
#[tokio::test]
async fn a_send_batch_arrives_datagram_by_datagram_in_order() {
    let (udp, peer) = pair();
    let to = peer.local_addr().unwrap();
    let mut batch = SendBatch::new(1 << 20, 512);
    let mut sizes = Vec::new();
    // Small enough in all for the peer's default receive buffer.
    for run in 0..4usize {
        for k in 0..(8 + run * 3) {
            sizes.push(if k == 7 + run * 3 {
                100 + run
            } else {
                500 + run
            });
        }
    }
    sizes.extend([148, 32, 1452, 1452, 17]);
    for (i, len) in sizes.iter().enumerate() {
        let datagram: Vec<u8> = (0..*len).map(|b| (b + i) as u8).collect();
        assert!(batch.push(to, &datagram));
    }
    assert_eq!(send_all(&mut batch, &udp), 0);
    let gso = udp.gso.load(Ordering::Relaxed);
    let mut buf = vec![0u8; 70_000];
    for (i, len) in sizes.iter().enumerate() {
        let (n, _) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(n, *len, "datagram {i} (gso {gso})");
        assert!(buf[..n]
            .iter()
            .enumerate()
            .all(|(b, v)| *v == (b + i) as u8));
    }
    if gso {
        // Four runs plus the odd sizes: far fewer messages than datagrams.
        assert!(
            batch.groups.len() < sizes.len() / 4,
            "{}",
            batch.groups.len()
        );
    }
    batch.clear();
    assert!(batch.is_empty());
}

/// A GSO burst comes back apart into its datagrams at a GRO receiver.
#[tokio::test]
async fn a_coalesced_receive_comes_apart_into_its_datagrams() {
    let (tx, _) = pair();
    let (rx, _) = pair();
    let to = local(&rx);
    let mut batch = SendBatch::new(1 << 20, 512);
    let sizes: Vec<usize> = (0..200)
        .map(|i| if i % 50 == 49 { 100 } else { 1000 })
        .collect();
    for (i, len) in sizes.iter().enumerate() {
        assert!(batch.push(to, &vec![i as u8; *len]));
    }
    assert_eq!(send_all(&mut batch, &tx), 0);
    let mut got = Vec::new();
    let mut recv = RecvBatch::new();
    let mut spins = 0u64;
    let mut buffers = 0;
    while got.len() < sizes.len() && spins < 10_000_000 {
        spins += 1;
        match recv.recv(&rx) {
            Ok(n) => {
                buffers += n;
                let mut cursor = Cursor::default();
                while let Some((from, d)) = recv.next(&mut cursor) {
                    assert_eq!(canonical(from).port(), local(&tx).port());
                    got.push((d.len(), d[0]));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
    let want: Vec<(usize, u8)> = sizes
        .iter()
        .enumerate()
        .map(|(i, l)| (*l, i as u8))
        .collect();
    assert_eq!(got, want);
    if tx.gso.load(Ordering::Relaxed) && rx.gro {
        // Runs of 49 came coalesced.
        assert!(buffers <= sizes.len() / 10, "{buffers} buffers");
    }
    eprintln!(
        "gso {} gro {}: {} datagrams in {buffers} buffers",
        tx.gso.load(Ordering::Relaxed),
        rx.gro,
        got.len()
    );
}

#[tokio::test]
async fn a_refused_destination_is_skipped_and_the_rest_still_go() {
    let (udp, peer) = pair();
    let mut batch = SendBatch::new(1 << 16, 16);
    // Port 0 is refused by the kernel at send time (EINVAL without
    // GSO): counted, skipped.
    assert!(batch.push("127.0.0.1:0".parse().unwrap(), &[1u8; 10]));
    assert!(batch.push(peer.local_addr().unwrap(), &[2u8; 20]));
    let failed = send_all(&mut batch, &udp);
    let mut buf = [0u8; 64];
    let (n, _) = peer.recv_from(&mut buf).unwrap();
    assert_eq!((n, buf[0]), (20, 2));
    assert_eq!(failed, 1);
}
