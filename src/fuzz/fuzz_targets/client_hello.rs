//! Fuzzes the TLS ClientHello parser on arbitrary bytes, as a client of a
//! hostname-routed port sends them.
//!
//! Beyond "never panics", [`client_hello::parse`] is checked as the reader
//! uses it, one prefix at a time: as the buffer grows, the answer is
//! `Incomplete` for a while and then settles for good on an error or on one
//! complete hello (the same name, the same length, complete exactly when
//! the last byte of its last record arrives, whatever the client sends
//! after it); `Incomplete` never lasts to
//! [`client_hello::MAX_CLIENT_HELLO`] bytes. A complete hello's handshake
//! message, re-framed into records of sizes the input picks, gives the same
//! name.

#![no_main]

use libfuzzer_sys::fuzz_target;

use client_hello::{parse, ClientHello, Parse, MAX_CLIENT_HELLO};
use geoedge_client_hello as client_hello;

fuzz_target!(|data: &[u8]| {
    if let Some(hello) = prefixes_settle(data) {
        reframed(data, &hello);
    }
});

/// Parses every prefix of `data` up to the point where the answer settles,
/// then the whole of `data`, and checks the answers agree; returns the
/// complete hello, if any.
fn prefixes_settle(data: &[u8]) -> Option<ClientHello> {
    let whole = parse(data);
    let mut settled = None;
    for n in 0..=data.len() {
        let r = parse(&data[..n]);
        if r == Ok(Parse::Incomplete) {
            assert!(n < MAX_CLIENT_HELLO, "still incomplete after {n} bytes");
            continue;
        }
        if let Ok(Parse::Complete(hello)) = &r {
            assert_eq!(hello.len, n, "complete before its last byte arrived");
        }
        // Every longer prefix must give the same answer; checking the whole
        // input is enough (and keeps a run linear in its length).
        settled = Some(r);
        break;
    }
    match settled {
        None => assert_eq!(whole, Ok(Parse::Incomplete)),
        // An error stays an error (which one may depend on how much was
        // seen).
        Some(Err(_)) => assert!(
            whole.is_err(),
            "an error became {whole:?} as more bytes came"
        ),
        Some(first) => assert_eq!(whole, first, "the answer changed as more bytes came"),
    }
    match whole {
        Ok(Parse::Complete(hello)) => {
            assert!(hello.len <= MAX_CLIENT_HELLO);
            if let Some(name) = &hello.server_name {
                assert!(!name.is_empty() && name.len() <= 255, "{name:?}");
                assert!(!name.ends_with('.'), "{name:?}");
                assert!(
                    name.bytes()
                        .all(|b| (0x21..=0x7e).contains(&b) && !b.is_ascii_uppercase()),
                    "{name:?}"
                );
            }
            Some(hello)
        }
        // Every error has a message and a log label.
        Err(e) => {
            assert!(!e.to_string().is_empty());
            assert!(!e.reason().is_empty());
            None
        }
        Ok(Parse::Incomplete) => None,
    }
}

/// Joins the payloads of the records of `data[..hello.len]` (a complete
/// hello's) and frames them again into records of sizes taken from the
/// bytes after the hello (1 to 256 bytes each), when any follow it.
fn reframed(data: &[u8], hello: &ClientHello) {
    let mut message = Vec::new();
    let mut rest = &data[..hello.len];
    while let [_, _, _, hi, lo, tail @ ..] = rest {
        let n = usize::from(u16::from_be_bytes([*hi, *lo]));
        message.extend_from_slice(&tail[..n]);
        rest = &tail[n..];
    }
    let sizes = &data[hello.len..];
    if sizes.is_empty() {
        return;
    }
    let mut out = Vec::new();
    let mut rest = &message[..];
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let n = (usize::from(size) + 1).min(rest.len());
        out.extend_from_slice(&[22, 3, 3]);
        out.extend_from_slice(&u16::try_from(n).unwrap().to_be_bytes());
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
    }
    let expected = if out.len() > MAX_CLIENT_HELLO {
        Err(client_hello::ClientHelloError::TooLong)
    } else {
        Ok(Parse::Complete(ClientHello {
            server_name: hello.server_name.clone(),
            len: out.len(),
        }))
    };
    assert_eq!(parse(&out), expected, "re-framed in records of {sizes:?}");
}
