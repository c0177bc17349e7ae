//! The ClientHello parser against real captured hellos (tests/fixtures,
//! see its README), hellos re-framed into records of every size, malformed
//! hellos built field by field, and random input.

use super::*;
use proptest::prelude::*;

/// A real ClientHello (the client's whole first flight) and the name in it.
struct Capture {
    name: &'static str,
    bytes: &'static [u8],
    server_name: Option<&'static str>,
}

const CAPTURES: &[Capture] = &[
    Capture {
        name: "openssl_tls13",
        bytes: include_bytes!("../tests/fixtures/openssl_tls13.bin"),
        server_name: Some("a.example.com"),
    },
    Capture {
        name: "openssl_tls12",
        bytes: include_bytes!("../tests/fixtures/openssl_tls12.bin"),
        server_name: Some("a.example.com"),
    },
    Capture {
        name: "curl",
        bytes: include_bytes!("../tests/fixtures/curl.bin"),
        server_name: Some("b.example.com"),
    },
    Capture {
        name: "openssl_no_sni",
        bytes: include_bytes!("../tests/fixtures/openssl_no_sni.bin"),
        server_name: None,
    },
    Capture {
        name: "openssl_fragmented",
        bytes: include_bytes!("../tests/fixtures/openssl_fragmented.bin"),
        server_name: Some("c.example.com"),
    },
    Capture {
        name: "chrome155_utls",
        bytes: include_bytes!("../tests/fixtures/chrome155_utls.bin"),
        server_name: Some("www.example.com"),
    },
];

fn capture(name: &str) -> &'static Capture {
    CAPTURES.iter().find(|c| c.name == name).unwrap()
}

fn complete(server_name: Option<&str>, len: usize) -> Result<Parse, ClientHelloError> {
    Ok(Parse::Complete(ClientHello {
        server_name: server_name.map(str::to_owned),
        len,
    }))
}

/// The (type, payload) of each record of `bytes`; test inputs only.
fn records(bytes: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        out.push((rest[0], &rest[5..5 + len]));
        rest = &rest[5 + len..];
    }
    out
}

/// The handshake message a capture's records carry.
fn message(bytes: &[u8]) -> Vec<u8> {
    records(bytes)
        .into_iter()
        .flat_map(|(_, p)| p.to_vec())
        .collect()
}

/// The extension types of a handshake message holding a ClientHello;
/// written independently of the parser, for test inputs only.
fn extension_types(message: &[u8]) -> Vec<u16> {
    let mut pos = 4 + 2 + 32;
    pos += 1 + usize::from(message[pos]);
    pos += 2 + usize::from(u16::from_be_bytes([message[pos], message[pos + 1]]));
    pos += 1 + usize::from(message[pos]);
    let mut types = Vec::new();
    if pos == message.len() {
        return types;
    }
    let end = pos + 2 + usize::from(u16::from_be_bytes([message[pos], message[pos + 1]]));
    pos += 2;
    while pos < end {
        types.push(u16::from_be_bytes([message[pos], message[pos + 1]]));
        pos += 4 + usize::from(u16::from_be_bytes([message[pos + 2], message[pos + 3]]));
    }
    assert_eq!(pos, message.len());
    types
}

/// `message` framed into handshake records of the given sizes (the last
/// size repeats), with record version 3.`minor`.
fn frame(message: &[u8], sizes: &[usize], minor: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = message;
    let last = sizes.last().copied().unwrap_or(MAX_FRAGMENT);
    let mut sizes = sizes.iter().copied().chain(std::iter::repeat(last));
    while !rest.is_empty() {
        let n = sizes.next().unwrap().clamp(1, MAX_FRAGMENT).min(rest.len());
        out.extend_from_slice(&[22, 3, minor]);
        out.extend_from_slice(&u16::try_from(n).unwrap().to_be_bytes());
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
    }
    out
}

/// One record (any type) around `payload`.
fn record(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![kind, 3, 1];
    out.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn u16_prefixed(body: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// The fields of a ClientHello body, to build valid and broken ones.
#[derive(Clone)]
struct Hello {
    version: [u8; 2],
    session_id: Vec<u8>,
    suites: Vec<u8>,
    compression: Vec<u8>,
    /// None: no extensions block at all.
    extensions: Option<Vec<(u16, Vec<u8>)>>,
}

impl Hello {
    fn new(extensions: Vec<(u16, Vec<u8>)>) -> Self {
        Self {
            version: [3, 3],
            session_id: vec![7; 32],
            // A GREASE suite first, as browsers send.
            suites: vec![0x3a, 0x3a, 0x13, 0x01, 0xc0, 0x2f],
            compression: vec![0],
            extensions: Some(extensions),
        }
    }

    fn with_name(name: &[u8]) -> Self {
        Self::new(vec![(0, sni(&[(0, name)]))])
    }

    fn body(&self) -> Vec<u8> {
        let mut body = self.version.to_vec();
        body.extend_from_slice(&[0x42; 32]);
        body.push(u8::try_from(self.session_id.len()).unwrap());
        body.extend_from_slice(&self.session_id);
        body.extend_from_slice(&u16_prefixed(&self.suites));
        body.push(u8::try_from(self.compression.len()).unwrap());
        body.extend_from_slice(&self.compression);
        if let Some(extensions) = &self.extensions {
            let mut block = Vec::new();
            for (kind, data) in extensions {
                block.extend_from_slice(&kind.to_be_bytes());
                block.extend_from_slice(&u16_prefixed(data));
            }
            body.extend_from_slice(&u16_prefixed(&block));
        }
        body
    }

    /// The handshake message.
    fn message(&self) -> Vec<u8> {
        handshake(1, &self.body())
    }

    /// The message in one record.
    fn bytes(&self) -> Vec<u8> {
        record(22, &self.message())
    }
}

fn handshake(kind: u8, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).unwrap().to_be_bytes();
    let mut out = vec![kind, len[1], len[2], len[3]];
    out.extend_from_slice(body);
    out
}

/// A server_name extension body with the given (name type, name) entries.
fn sni(entries: &[(u8, &[u8])]) -> Vec<u8> {
    let mut list = Vec::new();
    for (kind, name) in entries {
        list.push(*kind);
        list.extend_from_slice(&u16_prefixed(name));
    }
    u16_prefixed(&list)
}

fn name_of(buf: &[u8]) -> Option<String> {
    match parse(buf) {
        Ok(Parse::Complete(hello)) => {
            assert_eq!(hello.len, buf.len());
            hello.server_name
        }
        other => panic!("{other:?}"),
    }
}

fn assert_malformed(buf: &[u8], what: &str) {
    match parse(buf) {
        Err(ClientHelloError::Malformed(m)) => assert!(m.contains(what), "{m:?} vs {what:?}"),
        other => panic!("expected malformed ({what}), got {other:?}"),
    }
}

#[test]
fn captures_give_their_name_and_length() {
    for c in CAPTURES {
        assert_eq!(
            parse(c.bytes),
            complete(c.server_name, c.bytes.len()),
            "{}",
            c.name
        );
    }
}

#[test]
fn every_proper_prefix_of_a_capture_is_incomplete() {
    for c in CAPTURES {
        for end in 0..c.bytes.len() {
            assert_eq!(
                parse(&c.bytes[..end]),
                Ok(Parse::Incomplete),
                "{} cut at {end}",
                c.name
            );
        }
    }
}

#[test]
fn what_follows_the_hello_is_not_read() {
    // A middlebox-compatibility change_cipher_spec and early data, or junk.
    for c in CAPTURES {
        for tail in [
            &[20, 3, 3, 0, 1, 1, 23, 3, 3, 0, 2, 9, 9][..],
            b"\0\xff junk",
        ] {
            let mut buf = c.bytes.to_vec();
            buf.extend_from_slice(tail);
            assert_eq!(
                parse(&buf),
                complete(c.server_name, c.bytes.len()),
                "{}",
                c.name
            );
        }
    }
}

#[test]
fn captures_cover_what_they_claim() {
    // The fragmented one comes in several records, the others in one.
    for c in CAPTURES {
        let n = records(c.bytes).len();
        if c.name == "openssl_fragmented" {
            assert_eq!(n, 4, "{}", c.name);
        } else {
            assert_eq!(n, 1, "{}", c.name);
        }
    }
    // Chrome's has GREASE extensions (two), an ECH GREASE extension and
    // the post-quantum key share, and is over 1.8 KB.
    let chrome = capture("chrome155_utls");
    let types = extension_types(&message(chrome.bytes));
    let grease = |t: &u16| t & 0x0f0f == 0x0a0a && t >> 8 == t & 0xff;
    assert_eq!(types.iter().filter(|t| grease(t)).count(), 2, "{types:x?}");
    assert!(types.contains(&0xfe0d), "{types:x?}");
    assert!(chrome.bytes.len() > 1800);
    // The TLS 1.2 one has no supported_versions; the no-SNI one no
    // server_name; curl's is padded (extension 21).
    assert!(!extension_types(&message(capture("openssl_tls12").bytes)).contains(&43));
    assert!(!extension_types(&message(capture("openssl_no_sni").bytes)).contains(&0));
    assert!(extension_types(&message(capture("curl").bytes)).contains(&21));
}

#[test]
fn captures_reframed_in_small_records_parse_the_same() {
    for c in CAPTURES {
        let message = message(c.bytes);
        for size in [1, 2, 3, 4, 5, 7, 64, 100, 511, 4096] {
            let buf = frame(&message, &[size], 1);
            if buf.len() > MAX_CLIENT_HELLO {
                // One-byte records of a 1.9 KB hello take 6 times as much.
                assert_eq!(parse(&buf), Err(ClientHelloError::TooLong), "{}", c.name);
                continue;
            }
            assert_eq!(
                parse(&buf),
                complete(c.server_name, buf.len()),
                "{} in records of {size}",
                c.name
            );
        }
    }
}

#[test]
fn not_tls_is_decided_on_the_first_bytes() {
    for buf in [
        &b"G"[..],
        b"GET / HTTP/1.1\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        // SSLv2-style ClientHello (two-byte length with the high bit set).
        &[0x80, 0x2e, 0x01, 0x00, 0x02],
        // An alert or application data first.
        &[21, 3, 3],
        &[23],
        // Handshake type but a version that is not 3.x.
        &[22, 2],
        &[22, 0xfe, 0xfd],
        &[0],
    ] {
        assert_eq!(parse(buf), Err(ClientHelloError::NotTls), "{buf:?}");
    }
    for buf in [&[][..], &[22], &[22, 3], &[22, 3, 1], &[22, 3, 9, 0]] {
        assert_eq!(parse(buf), Ok(Parse::Incomplete), "{buf:?}");
    }
}

#[test]
fn another_handshake_message_or_record_type_is_not_a_client_hello() {
    // A ServerHello, or a HelloRequest: decided on the type byte.
    assert_eq!(
        parse(&[22, 3, 3, 0, 100, 2]),
        Err(ClientHelloError::NotClientHello)
    );
    assert_eq!(
        parse(&record(22, &handshake(0, &[]))),
        Err(ClientHelloError::NotClientHello)
    );
    // Another record type in the middle of a fragmented hello.
    let message = message(capture("curl").bytes);
    let (head, tail) = message.split_at(100);
    for kind in [20, 21, 23, 24] {
        let mut buf = record(22, head);
        buf.extend_from_slice(&record(kind, &[1]));
        buf.extend_from_slice(&record(22, tail));
        assert_eq!(
            parse(&buf),
            Err(ClientHelloError::NotClientHello),
            "type {kind}"
        );
        // Decided on the type byte.
        assert_eq!(
            parse(&buf[..head.len() + 6]),
            Err(ClientHelloError::NotClientHello)
        );
    }
    let mut buf = record(22, head);
    buf.extend_from_slice(&record(99, &[1]));
    assert_malformed(&buf, "record type");
    let mut buf = record(22, head);
    buf.extend_from_slice(&[22, 4, 1]);
    assert_malformed(&buf, "record version");
}

#[test]
fn record_lengths_follow_rfc_8446() {
    // Zero-length handshake records are forbidden.
    let message = Hello::with_name(b"a.example").message();
    let mut buf = record(22, &message[..10]);
    buf.extend_from_slice(&record(22, &[]));
    assert_malformed(&buf, "empty handshake record");
    assert_malformed(&[22, 3, 1, 0, 0], "empty handshake record");
    // A record over 2^14 bytes is malformed; one of 2^14 is valid but,
    // with its header, past MAX_CLIENT_HELLO (the largest that fits is in
    // the_largest_hello_fits_and_one_byte_more_does_not).
    assert_malformed(&[22, 3, 1, 0x40, 0x01, 1], "longer than 2^14");
    assert_eq!(
        parse(&[22, 3, 1, 0x40, 0x00, 1]),
        Err(ClientHelloError::TooLong)
    );
}

#[test]
fn a_record_holding_more_than_the_hello_is_malformed() {
    let mut message = Hello::with_name(b"a.example").message();
    message.extend_from_slice(&handshake(11, &[0; 3]));
    assert_malformed(&record(22, &message), "more than the ClientHello");
    // Decided as soon as the hello's length is there.
    assert_malformed(&record(22, &message)[..9], "more than the ClientHello");
    // Also when the hello's header comes in a later record.
    let mut buf = record(22, &message[..2]);
    buf.extend_from_slice(&record(22, &message[2..]));
    assert_malformed(&buf[..5 + 2 + 5 + 2], "more than the ClientHello");
}

#[test]
fn the_largest_hello_fits_and_one_byte_more_does_not() {
    // One record of MAX_CLIENT_HELLO bytes: header, handshake header, body.
    let pad = |n: usize| {
        let hello = Hello::new(vec![(0, sni(&[(0, b"big.example")])), (21, vec![0; n])]);
        record(22, &hello.message())
    };
    let base = pad(0).len();
    let fits = pad(MAX_CLIENT_HELLO - base);
    assert_eq!(fits.len(), MAX_CLIENT_HELLO);
    assert_eq!(name_of(&fits).as_deref(), Some("big.example"));
    assert_eq!(parse(&fits[..fits.len() - 1]), Ok(Parse::Incomplete));
    let over = pad(MAX_CLIENT_HELLO - base + 1);
    assert_eq!(parse(&over), Err(ClientHelloError::TooLong));
    // Decided on the record header already (its end is past the limit).
    assert_eq!(parse(&over[..5]), Err(ClientHelloError::TooLong));
    // A hello declaring more than can fit: decided on its length field.
    let mut buf = vec![22, 3, 1, 0, 4, 1, 0, 0x40, 0x00];
    assert_eq!(parse(&buf), Err(ClientHelloError::TooLong));
    buf.extend_from_slice(&[3, 3]);
    assert_eq!(parse(&buf), Err(ClientHelloError::TooLong));
    // The same body fits in one record, but not in many small ones.
    let message = Hello::new(vec![(21, vec![0; 3000])]).message();
    let buf = frame(&message, &[1], 3);
    assert_eq!(parse(&buf), Err(ClientHelloError::TooLong));
    // ... and Incomplete never lasts to the limit.
    let cut = MAX_CLIENT_HELLO - 1;
    assert!(matches!(
        parse(&buf[..cut]),
        Ok(Parse::Incomplete) | Err(ClientHelloError::TooLong)
    ));
}

#[test]
fn the_name_is_lower_cased_without_its_trailing_dot() {
    for (raw, name) in [
        (&b"Example.COM"[..], "example.com"),
        (b"example.com.", "example.com"),
        (b"WWW.Example.Com.", "www.example.com"),
        (b"a", "a"),
        (b"a.", "a"),
        (b"xn--bcher-kva.example", "xn--bcher-kva.example"),
        (b"_srv.example", "_srv.example"),
        (b"192.0.2.1", "192.0.2.1"),
    ] {
        assert_eq!(
            name_of(&Hello::with_name(raw).bytes()).as_deref(),
            Some(name),
            "{raw:?}"
        );
    }
    let long = [b'a'; 255];
    assert_eq!(
        name_of(&Hello::with_name(&long).bytes()).map(|n| n.len()),
        Some(255)
    );
    let mut long_dot = long.to_vec();
    long_dot.push(b'.');
    assert_eq!(
        name_of(&Hello::with_name(&long_dot).bytes()).map(|n| n.len()),
        Some(255)
    );
}

#[test]
fn invalid_host_names_are_malformed() {
    let too_long = [b'a'; 256];
    for raw in [
        &b""[..],
        b".",
        b"a\0b",
        b"a b",
        b"\texample.com",
        b"b\xc3\xbccher.example",
        b"\x7f",
        &too_long,
    ] {
        let buf = Hello::with_name(raw).bytes();
        match parse(&buf) {
            Err(ClientHelloError::Malformed(_)) => {}
            other => panic!("{raw:?}: {other:?}"),
        }
    }
}

#[test]
fn server_name_extension_shapes() {
    let bytes = |ext: Vec<u8>| Hello::new(vec![(0, ext)]).bytes();
    // Other name types are skipped, before or after the host name.
    assert_eq!(
        name_of(&bytes(sni(&[(7, b"opaque"), (0, b"x.example")]))).as_deref(),
        Some("x.example")
    );
    assert_eq!(
        name_of(&bytes(sni(&[(0, b"x.example"), (7, b"")]))).as_deref(),
        Some("x.example")
    );
    assert_eq!(name_of(&bytes(sni(&[(7, b"opaque")]))), None);
    // Two host names, an empty list, an empty extension, a list that does
    // not fill the extension or overruns it, an entry past the list.
    assert_malformed(&bytes(sni(&[(0, b"x"), (0, b"y")])), "two host names");
    assert_malformed(&bytes(sni(&[])), "empty server_name list");
    assert_malformed(&bytes(vec![]), "server_name list length");
    let mut ext = sni(&[(0, b"x.example")]);
    ext.push(0);
    assert_malformed(&bytes(ext), "bytes after the server_name list");
    let mut ext = sni(&[(0, b"x.example")]);
    ext[1] += 1;
    assert_malformed(&bytes(ext), "server_name list length");
    let mut ext = sni(&[(0, b"x.example")]);
    ext[4] += 1;
    assert_malformed(&bytes(ext), "server_name entry length");
    // Two server_name extensions, even the second one empty or broken.
    let dup = |second: Vec<u8>| {
        Hello::new(vec![
            (0, sni(&[(0, b"x.example")])),
            (0x0a0a, vec![]),
            (0, second),
        ])
        .bytes()
    };
    assert_malformed(&dup(sni(&[(0, b"x.example")])), "two server_name");
    assert_malformed(&dup(vec![]), "two server_name");
}

#[test]
fn grease_and_ech_are_skipped() {
    // GREASE extensions (empty and not), an ECH extension with an outer
    // body, the public name in server_name.
    let mut ech = vec![0, 0, 1, 0, 1, 0x42];
    ech.extend_from_slice(&u16_prefixed(&[5; 32]));
    ech.extend_from_slice(&u16_prefixed(&[6; 144]));
    let hello = Hello::new(vec![
        (0x1a1a, vec![]),
        (0xfe0d, ech),
        (0, sni(&[(0, b"public.example")])),
        (0xdada, vec![0]),
    ]);
    assert_eq!(name_of(&hello.bytes()).as_deref(), Some("public.example"));
}

#[test]
fn hello_fields_are_bounds_checked() {
    let ok = Hello::with_name(b"x.example");
    assert_eq!(name_of(&ok.bytes()).as_deref(), Some("x.example"));
    // Without extensions: valid, no name.
    let mut no_ext = ok.clone();
    no_ext.extensions = None;
    assert_eq!(name_of(&no_ext.bytes()), None);
    // With an empty extensions block: valid, no name.
    assert_eq!(name_of(&Hello::new(vec![]).bytes()), None);

    let mut h = ok.clone();
    h.version = [2, 0];
    assert_malformed(&h.bytes(), "legacy_version");
    let mut h = ok.clone();
    h.session_id = vec![1; 33];
    assert_malformed(&h.bytes(), "legacy_session_id");
    let mut h = ok.clone();
    h.suites = vec![0x13, 0x01, 0xc0];
    assert_malformed(&h.bytes(), "cipher_suites");
    let mut h = ok.clone();
    h.suites = vec![];
    assert_malformed(&h.bytes(), "cipher_suites");
    let mut h = ok.clone();
    h.compression = vec![];
    assert_malformed(&h.bytes(), "compression");

    // Lengths that overrun the hello, or do not fill it.
    let message = ok.message();
    let ext_len_at = message.len() - 2 - 4 - sni(&[(0, b"x.example")]).len();
    let mut m = message.clone();
    m[ext_len_at + 1] += 1;
    assert_malformed(&record(22, &m), "extensions");
    let mut m = message.clone();
    m[ext_len_at + 1] -= 1;
    assert_malformed(&record(22, &m), "extension");
    let mut m = message.clone();
    m.push(0);
    m[3] += 1;
    assert_malformed(&record(22, &m), "bytes after the extensions");
    // Too short for its fixed fields.
    for len in [0, 1, 33, 34] {
        assert_malformed(&record(22, &handshake(1, &message[4..4 + len])), "");
    }
    // An extension whose length overruns the block.
    let mut m = message.clone();
    m[ext_len_at + 2 + 3] += 1;
    assert_malformed(&record(22, &m), "extension length");
}

#[test]
fn errors_show_as_soon_as_their_bytes_arrive() {
    // The session id length byte alone decides.
    let mut h = Hello::with_name(b"x.example");
    h.session_id = vec![1; 33];
    let buf = h.bytes();
    let at = 5 + 4 + 2 + 32;
    assert_eq!(parse(&buf[..at]), Ok(Parse::Incomplete));
    assert_malformed(&buf[..=at], "legacy_session_id");
    // A bad host name, before the rest of the hello arrives.
    let hello = Hello::new(vec![(0, sni(&[(0, b"a\0b")])), (21, vec![0; 100])]);
    let buf = hello.bytes();
    let name_end = buf.windows(3).position(|w| w == b"a\0b").unwrap() + 3;
    assert_eq!(parse(&buf[..name_end - 1]), Ok(Parse::Incomplete));
    assert_malformed(&buf[..name_end], "printable");
    // A duplicate server_name, on its type bytes.
    let hello = Hello::new(vec![
        (0, sni(&[(0, b"x.example")])),
        (0, sni(&[(0, b"x.example")])),
    ]);
    let buf = hello.bytes();
    let second = buf.len() - 4 - sni(&[(0, b"x.example")]).len();
    assert_eq!(parse(&buf[..second + 3]), Ok(Parse::Incomplete));
    assert_malformed(&buf[..second + 4], "two server_name");
}

#[test]
fn errors_have_distinct_snake_case_reasons_and_messages() {
    let all = [
        ClientHelloError::NotTls,
        ClientHelloError::NotClientHello,
        ClientHelloError::TooLong,
        ClientHelloError::Malformed("x"),
    ];
    let reasons: Vec<_> = all.iter().map(ClientHelloError::reason).collect();
    assert_eq!(
        reasons,
        ["not_tls", "not_client_hello", "too_long", "malformed"]
    );
    let messages: std::collections::HashSet<_> = all.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), all.len());
    assert_eq!(
        ClientHelloError::TooLong.to_string(),
        "TLS ClientHello longer than 16384 bytes (records included)"
    );
    assert_eq!(
        ClientHelloError::Malformed("two host names").to_string(),
        "malformed TLS ClientHello: two host names"
    );
}

/// Checks what holds for any input: an error stays an error with more
/// bytes; a complete hello stays the same whatever follows, and every
/// shorter prefix was incomplete; incomplete stays under the limit.
fn check_consistent(buf: &[u8], extra: &[u8]) -> Result<(), TestCaseError> {
    let result = parse(buf);
    let mut longer = buf.to_vec();
    longer.extend_from_slice(extra);
    match result {
        Err(e) => {
            prop_assert!(parse(&longer).is_err());
            prop_assert!(!e.reason().is_empty());
        }
        Ok(Parse::Complete(hello)) => {
            prop_assert!(hello.len <= buf.len() && hello.len <= MAX_CLIENT_HELLO);
            if let Some(name) = &hello.server_name {
                prop_assert!(!name.is_empty() && name.len() <= 255);
                prop_assert!(!name.ends_with('.'));
                prop_assert!(name.bytes().all(|b| (0x21..=0x7e).contains(&b)));
                prop_assert_eq!(name, &name.to_ascii_lowercase());
            }
            let expected = Ok(Parse::Complete(hello.clone()));
            prop_assert_eq!(parse(&longer), expected.clone());
            prop_assert_eq!(parse(&buf[..hello.len]), expected);
            for end in 0..hello.len {
                prop_assert_eq!(parse(&buf[..end]), Ok(Parse::Incomplete));
            }
        }
        Ok(Parse::Incomplete) => {
            prop_assert!(buf.len() < MAX_CLIENT_HELLO);
            for end in 0..buf.len() {
                prop_assert_eq!(parse(&buf[..end]), Ok(Parse::Incomplete));
            }
        }
    }
    Ok(())
}

/// Record sizes: mostly small, sometimes large or the largest.
fn record_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(
        prop_oneof![
            6 => 1..16usize,
            3 => 1..600usize,
            1 => Just(MAX_FRAGMENT),
        ],
        1..40,
    )
}

proptest! {
    #[test]
    fn a_capture_cut_anywhere_is_incomplete(
        index in 0..CAPTURES.len(),
        cut in any::<prop::sample::Index>(),
    ) {
        let c = &CAPTURES[index];
        let end = cut.index(c.bytes.len());
        prop_assert_eq!(parse(&c.bytes[..end]), Ok(Parse::Incomplete));
        prop_assert_eq!(parse(c.bytes), complete(c.server_name, c.bytes.len()));
    }

    #[test]
    fn reframed_captures_parse_to_the_same_name(
        index in 0..CAPTURES.len(),
        sizes in record_sizes(),
        minor in prop::sample::select(vec![0u8, 1, 3, 4]),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 8),
    ) {
        let c = &CAPTURES[index];
        let buf = frame(&message(c.bytes), &sizes, minor);
        if buf.len() > MAX_CLIENT_HELLO {
            prop_assert_eq!(parse(&buf), Err(ClientHelloError::TooLong));
        } else {
            prop_assert_eq!(parse(&buf), complete(c.server_name, buf.len()));
            prop_assert_eq!(parse(&buf[..buf.len() - 1]), Ok(Parse::Incomplete));
            for cut in cuts {
                prop_assert_eq!(parse(&buf[..cut.index(buf.len())]), Ok(Parse::Incomplete));
            }
        }
    }

    #[test]
    fn mutated_captures_never_panic_and_decisions_are_consistent(
        index in 0..CAPTURES.len(),
        sizes in record_sizes(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        extra in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let c = &CAPTURES[index];
        let mut buf = frame(&message(c.bytes), &sizes, 1);
        for (at, byte) in edits {
            let at = at.index(buf.len());
            buf[at] = byte;
        }
        buf.truncate(cut.index(buf.len() + 1));
        check_consistent(&buf, &extra)?;
    }

    #[test]
    fn tls_like_bytes_never_panic_and_decisions_are_consistent(
        head in prop::collection::vec(any::<u8>(), 0..12),
        body in prop::collection::vec(any::<u8>(), 0..300),
        extra in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        // A record and handshake header with a length that matches
        // sometimes, then random bytes.
        let mut buf = vec![22, 3, head.first().copied().unwrap_or(1)];
        let len = body.len() + 4;
        buf.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        buf.push(1);
        buf.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
        if head.len() > 6 {
            buf.extend_from_slice(&head);
        }
        buf.extend_from_slice(&body);
        check_consistent(&buf, &extra)?;
    }

    #[test]
    fn fully_arbitrary_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..2200)) {
        let _ = parse(&buf);
        let mut tls = vec![22, 3];
        tls.extend_from_slice(&buf);
        let _ = parse(&tls);
    }
}
