//! The server name (SNI) of a TLS ClientHello, read without terminating
//! TLS: an L4 proxy that routes by hostname reads the client's first
//! flight, asks [`parse`] for the name, picks a backend and forwards the
//! bytes it read unchanged. The crate does no IO: [`parse`] looks at the
//! bytes read so far and says whether they hold a complete ClientHello, may
//! still become one, or never can.
//!
//! Specs: TLS 1.3 records and ClientHello, RFC 8446 §4.1.2 and §5.1 (TLS
//! 1.2, RFC 5246, has the same layout); server_name, RFC 6066 §3; GREASE,
//! RFC 8701; Encrypted Client Hello, draft-ietf-tls-esni. Where they leave
//! room, this crate chooses:
//!
//! - **Early answers.** Anything seen that is wrong is an error as soon as it
//!   shows: the first byte decides [`ClientHelloError::NotTls`] (it must be
//!   22, a handshake record; an SSLv2-style hello or plain text is not TLS),
//!   so does the second (the record version's major byte must be 3); the
//!   handshake type is checked as soon as its byte arrives, and the hello's
//!   fields as they arrive. [`Parse::Incomplete`] means every byte so far
//!   can still start a valid ClientHello that fits in
//!   [`MAX_CLIENT_HELLO`]; a hello whose declared length cannot fit is
//!   [`ClientHelloError::TooLong`] at once.
//! - **Records.** The hello may be split over any number of handshake
//!   records (each 1 to 2^14 bytes, RFC 8446 §5.1; a zero-length handshake
//!   record is malformed). Their version's minor byte is ignored, as RFC
//!   8446 says. Another record type before the hello is whole is
//!   [`ClientHelloError::NotClientHello`] (alert, change_cipher_spec,
//!   application data, heartbeat) or malformed (an unknown type). The last
//!   record must end with the hello: a record that holds more is malformed
//!   (no valid client sends anything after its ClientHello in the same
//!   record: RFC 8446 §5.1 requires the hello to end a record before a key
//!   change, and a client's next handshake message waits for the server).
//!   What follows that record (early data, a change_cipher_spec) is not
//!   looked at: [`ClientHello::len`] says where it starts.
//! - **The hello** is walked field by field with bounds checks:
//!   legacy_version (major byte 3), random, a session id of at most 32
//!   bytes, a non-empty even-length cipher-suite list, a non-empty
//!   compression-method list, then the extensions, which must fill the
//!   hello exactly (a hello without extensions is valid and has no name).
//!   Cipher suites, compression methods and every extension but
//!   server_name are skipped unread, so GREASE values (RFC 8701, `0x?A?A`)
//!   anywhere and Encrypted Client Hello (`0xfe0d`, real or GREASE) pass.
//!   With ECH the name read is the outer hello's, the ECH configuration's
//!   public name: the true name is encrypted for the backend.
//! - **server_name**: at most one such extension (a second one is
//!   malformed); its list must fill it exactly and hold at most one
//!   host_name (name type 0); entries of other name types are skipped
//!   (every one is read as a 2-byte-length-prefixed opaque, as
//!   implementations do). A list without a host_name gives no name.
//! - **The host name** must be 1 to 255 bytes of printable ASCII without
//!   spaces (0x21 to 0x7e; so no NUL, control bytes or UTF-8: RFC 6066
//!   wants A-labels), it is lower-cased, and one trailing dot is stripped
//!   (`Example.COM.` gives `example.com`; RFC 6066 says clients send no
//!   trailing dot, some do). Labels are not checked further: the name is a
//!   lookup key, not a DNS query.
//!
//! [`parse`] never panics. It allocates the returned name, and a joined
//! copy of the hello when it spans several records.

#![forbid(unsafe_code)]

use std::borrow::Cow;

/// Most bytes read while looking for a complete ClientHello (records
/// included); past it the client is refused.
///
/// 16 KiB: a ClientHello of today is well under it, also with a
/// post-quantum key share (Chrome 155's, with an X25519MLKEM768 key share
/// of 1,216 bytes and a GREASE ECH, is 1,955 bytes; a resumption adds its
/// ticket, a few hundred bytes), with room for eight times that. (A record
/// of the full 2^14 bytes does not fit with its header: a hello that
/// needs one is over the limit anyway.)
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// A TLS record header: type, version, length.
const RECORD_HEADER: usize = 5;
/// The most payload bytes a plaintext record may carry (RFC 8446 §5.1).
const MAX_FRAGMENT: usize = 1 << 14;
/// A handshake message header: type, 3-byte length.
const HANDSHAKE_HEADER: usize = 4;

/// Record content types (RFC 8446 §5.1, RFC 6520).
const CONTENT_CHANGE_CIPHER_SPEC: u8 = 20;
const CONTENT_ALERT: u8 = 21;
const CONTENT_HANDSHAKE: u8 = 22;
const CONTENT_APPLICATION_DATA: u8 = 23;
const CONTENT_HEARTBEAT: u8 = 24;

/// The client_hello handshake type.
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// The server_name extension (RFC 6066 §3).
const EXTENSION_SERVER_NAME: u16 = 0;
/// The host_name name type of a server_name entry.
const NAME_TYPE_HOST_NAME: u8 = 0;
/// The longest legacy_session_id.
const MAX_SESSION_ID: usize = 32;
/// The longest host name accepted, trailing dot excluded.
const MAX_HOST_NAME: usize = 255;

/// The outcome of [`parse`] on the bytes read so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse {
    /// A whole ClientHello; what it says and how many bytes it took.
    Complete(ClientHello),
    /// The bytes so far can still start a valid ClientHello: read more.
    Incomplete,
}

/// What a complete ClientHello says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The host_name of the server_name extension, lower-cased ASCII (None
    /// when the hello carries no SNI).
    pub server_name: Option<String>,
    /// Bytes of the input up to and including the TLS record that held the
    /// hello's last byte.
    pub len: usize,
}

/// Why bytes are not a ClientHello the edge can route.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientHelloError {
    /// The first record is not a TLS handshake record (first byte not 22,
    /// or version major byte not 3): plain text, SSLv2, or other traffic.
    #[error("not TLS: the stream does not start with a TLS handshake record")]
    NotTls,
    /// A TLS handshake that does not start with a ClientHello, or another
    /// record type (alert, change_cipher_spec, application data) before the
    /// ClientHello is whole.
    #[error("TLS stream does not start with a ClientHello")]
    NotClientHello,
    /// The ClientHello, records included, does not fit in
    /// [`MAX_CLIENT_HELLO`] bytes.
    #[error(
        "TLS ClientHello longer than {} bytes (records included)",
        MAX_CLIENT_HELLO
    )]
    TooLong,
    /// The records or the ClientHello break the protocol; the text says
    /// where.
    #[error("malformed TLS ClientHello: {0}")]
    Malformed(&'static str),
}

impl ClientHelloError {
    /// A short snake_case label, for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotTls => "not_tls",
            Self::NotClientHello => "not_client_hello",
            Self::TooLong => "too_long",
            Self::Malformed(_) => "malformed",
        }
    }
}

/// Parses as much as `buf` holds (everything the client sent so far, from
/// its first byte).
///
/// `Incomplete` only while `buf` is a proper prefix of a valid ClientHello
/// (records included) of at most [`MAX_CLIENT_HELLO`] bytes, so a reader
/// that buffers up to that many bytes always gets an answer. A complete
/// hello stays the same as more bytes arrive, and an error stays an error
/// (not always the same one: the records' headers are checked before the
/// hello's fields). Never panics.
pub fn parse(buf: &[u8]) -> Result<Parse, ClientHelloError> {
    let gathered = gather(buf)?;
    let hello = match read_hello(&gathered.message) {
        Ok(hello) => hello,
        Err(Stop::Error(e)) => return Err(e),
        Err(Stop::Incomplete) => {
            // Every byte of the hello was there: a read past the available
            // bytes is past the declared end too, and that is an error
            // first. Kept as an error rather than a panic all the same.
            return if gathered.end.is_some() {
                Err(ClientHelloError::Malformed("truncated hello"))
            } else {
                Ok(Parse::Incomplete)
            };
        }
    };
    match gathered.end {
        Some(len) => Ok(Parse::Complete(ClientHello {
            server_name: hello,
            len,
        })),
        None => Ok(Parse::Incomplete),
    }
}

/// The handshake message bytes the records hold so far.
struct Gathered<'a> {
    /// The handshake message, header included, as much of it as arrived
    /// (joined when it spans several records).
    message: Cow<'a, [u8]>,
    /// Where the record holding the message's last byte ends, once every
    /// byte of the message is there.
    end: Option<usize>,
}

/// Walks the records at the start of `buf`, checking each header as its
/// bytes arrive, and collects the payload of those that carry the first
/// handshake message.
fn gather(buf: &[u8]) -> Result<Gathered<'_>, ClientHelloError> {
    let mut bytes: Cow<'_, [u8]> = Cow::Borrowed(&[]);
    // Start of the next record.
    let mut pos = 0usize;
    // Payload bytes the records seen so far declare.
    let mut declared = 0usize;
    // The message's length, header included, once its header is there.
    let mut need: Option<usize> = None;
    loop {
        if need.is_some_and(|n| declared >= n) {
            return Ok(Gathered {
                message: bytes,
                end: Some(pos),
            });
        }
        // Another record is needed; the smallest is a header and a byte.
        if pos + RECORD_HEADER + 1 > MAX_CLIENT_HELLO {
            return Err(ClientHelloError::TooLong);
        }
        let header = buf.get(pos..).unwrap_or_default();
        let header = header.get(..RECORD_HEADER).unwrap_or(header);
        check_record_header(header, pos == 0)?;
        let [_, _, _, hi, lo] = *header else {
            return Ok(Gathered {
                message: bytes,
                end: None,
            });
        };
        let length = usize::from(u16::from_be_bytes([hi, lo]));
        if length == 0 {
            return Err(ClientHelloError::Malformed("empty handshake record"));
        }
        if length > MAX_FRAGMENT {
            return Err(ClientHelloError::Malformed("record longer than 2^14 bytes"));
        }
        let start = pos + RECORD_HEADER;
        let end = start + length;
        if end > MAX_CLIENT_HELLO {
            return Err(ClientHelloError::TooLong);
        }
        declared += length;
        let payload = buf.get(start..end.min(buf.len())).unwrap_or_default();
        if bytes.is_empty() {
            bytes = Cow::Borrowed(payload);
        } else {
            bytes.to_mut().extend_from_slice(payload);
        }
        if need.is_none() {
            if let Some(&kind) = bytes.first() {
                if kind != HANDSHAKE_CLIENT_HELLO {
                    return Err(ClientHelloError::NotClientHello);
                }
            }
            if let Some(&[_, a, b, c]) = bytes.get(..HANDSHAKE_HEADER) {
                let n = HANDSHAKE_HEADER
                    + ((usize::from(a) << 16) | (usize::from(b) << 8) | usize::from(c));
                need = Some(n);
                // The fewest bytes the rest of the message can come in:
                // full records after this one.
                let rest = n.saturating_sub(declared);
                let least = end + rest + RECORD_HEADER * rest.div_ceil(MAX_FRAGMENT);
                if least > MAX_CLIENT_HELLO {
                    return Err(ClientHelloError::TooLong);
                }
            }
        }
        if need.is_some_and(|n| declared > n) {
            return Err(ClientHelloError::Malformed(
                "record holds more than the ClientHello",
            ));
        }
        if end > buf.len() {
            return Ok(Gathered {
                message: bytes,
                end: None,
            });
        }
        pos = end;
    }
}

/// Checks the bytes of a record header that arrived; `first` for the
/// stream's first record.
fn check_record_header(header: &[u8], first: bool) -> Result<(), ClientHelloError> {
    if let Some(&kind) = header.first() {
        if kind != CONTENT_HANDSHAKE {
            return Err(if first {
                ClientHelloError::NotTls
            } else {
                match kind {
                    CONTENT_CHANGE_CIPHER_SPEC
                    | CONTENT_ALERT
                    | CONTENT_APPLICATION_DATA
                    | CONTENT_HEARTBEAT => ClientHelloError::NotClientHello,
                    _ => ClientHelloError::Malformed("unknown record type"),
                }
            });
        }
    }
    if let Some(&major) = header.get(1) {
        if major != 3 {
            return Err(if first {
                ClientHelloError::NotTls
            } else {
                ClientHelloError::Malformed("record version is not 3.x")
            });
        }
    }
    Ok(())
}

/// Why a read of the hello stopped.
#[derive(Debug)]
enum Stop {
    /// The bytes needed have not arrived yet.
    Incomplete,
    /// The bytes break the protocol.
    Error(ClientHelloError),
}

impl From<ClientHelloError> for Stop {
    fn from(e: ClientHelloError) -> Self {
        Self::Error(e)
    }
}

/// A bounds-checked reader over the bytes of a vector that may not have
/// arrived in full: a read past `end` (what the enclosing length says) is
/// malformed, a read past the bytes there is incomplete.
struct Reader<'a> {
    /// The bytes that arrived (of the whole message).
    data: &'a [u8],
    /// The next byte to read.
    pos: usize,
    /// Where this vector ends, by its declared length.
    end: usize,
}

impl<'a> Reader<'a> {
    /// The next `n` bytes; `what` names the field for an error.
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Stop> {
        let next = self.pos.saturating_add(n);
        if next > self.end {
            return Err(Stop::Error(ClientHelloError::Malformed(what)));
        }
        let bytes = self.data.get(self.pos..next).ok_or(Stop::Incomplete)?;
        self.pos = next;
        Ok(bytes)
    }

    /// A big-endian number of `N` bytes (N ≤ 3).
    fn number<const N: usize>(&mut self, what: &'static str) -> Result<usize, Stop> {
        Ok(self
            .take(N, what)?
            .iter()
            .fold(0usize, |v, &b| (v << 8) | usize::from(b)))
    }

    /// A vector with an `N`-byte length prefix: a reader over it; this one
    /// moves past it.
    fn vector<const N: usize>(&mut self, what: &'static str) -> Result<Reader<'a>, Stop> {
        let len = self.number::<N>(what)?;
        let start = self.pos;
        let end = start.saturating_add(len);
        if end > self.end {
            return Err(Stop::Error(ClientHelloError::Malformed(what)));
        }
        self.pos = end;
        Ok(Reader {
            data: self.data,
            pos: start,
            end,
        })
    }

    /// Whether every byte of this vector was read.
    fn at_end(&self) -> bool {
        self.pos >= self.end
    }

    /// Skips the rest of this vector, which must have arrived.
    fn skip_rest(&mut self) -> Result<(), Stop> {
        self.take(self.end.saturating_sub(self.pos), "vector")?;
        Ok(())
    }
}

/// Reads the ClientHello handshake message (as much of it as arrived) and
/// returns its host name.
fn read_hello(data: &[u8]) -> Result<Option<String>, Stop> {
    // The message's own length (the record walk checked the type).
    let mut outer = Reader {
        data,
        pos: 0,
        end: usize::MAX,
    };
    outer.take(1, "handshake type")?;
    let mut hello = outer.vector::<3>("handshake length")?;

    let legacy_version = hello.take(2, "legacy_version")?;
    if legacy_version.first() != Some(&3) {
        return Err(ClientHelloError::Malformed("legacy_version is not 3.x").into());
    }
    hello.take(32, "random")?;
    let mut session_id = hello.vector::<1>("legacy_session_id")?;
    if session_id.end - session_id.pos > MAX_SESSION_ID {
        return Err(ClientHelloError::Malformed("legacy_session_id longer than 32 bytes").into());
    }
    session_id.skip_rest()?;
    let mut suites = hello.vector::<2>("cipher_suites")?;
    let suites_len = suites.end - suites.pos;
    if suites_len == 0 || suites_len % 2 != 0 {
        return Err(ClientHelloError::Malformed("cipher_suites length is zero or odd").into());
    }
    suites.skip_rest()?;
    let mut compression = hello.vector::<1>("legacy_compression_methods")?;
    if compression.at_end() {
        return Err(ClientHelloError::Malformed("no compression methods").into());
    }
    compression.skip_rest()?;
    if hello.at_end() {
        // No extensions at all (TLS 1.2 and older allow it).
        return Ok(None);
    }
    let mut extensions = hello.vector::<2>("extensions")?;
    if !hello.at_end() {
        return Err(ClientHelloError::Malformed("bytes after the extensions").into());
    }
    let mut name = None;
    let mut seen_server_name = false;
    while !extensions.at_end() {
        let kind = extensions.number::<2>("extension type")?;
        let mut body = extensions.vector::<2>("extension length")?;
        if kind == usize::from(EXTENSION_SERVER_NAME) {
            if seen_server_name {
                return Err(ClientHelloError::Malformed("two server_name extensions").into());
            }
            seen_server_name = true;
            name = read_server_name(&mut body)?;
        } else {
            body.skip_rest()?;
        }
    }
    Ok(name)
}

/// Reads a server_name extension's body: its host name, if it has one.
fn read_server_name(body: &mut Reader<'_>) -> Result<Option<String>, Stop> {
    let mut list = body.vector::<2>("server_name list length")?;
    if !body.at_end() {
        return Err(ClientHelloError::Malformed("bytes after the server_name list").into());
    }
    if list.at_end() {
        return Err(ClientHelloError::Malformed("empty server_name list").into());
    }
    let mut name = None;
    while !list.at_end() {
        let name_type = list.take(1, "server_name entry")?;
        let mut entry = list.vector::<2>("server_name entry length")?;
        if name_type != [NAME_TYPE_HOST_NAME] {
            entry.skip_rest()?;
            continue;
        }
        if name.is_some() {
            return Err(ClientHelloError::Malformed("two host names").into());
        }
        let len = entry.end - entry.pos;
        name = Some(host_name(entry.take(len, "host_name")?)?);
    }
    Ok(name)
}

/// Checks and normalizes a host name: printable ASCII without spaces, one
/// trailing dot stripped, 1 to 255 bytes, lower-cased.
fn host_name(raw: &[u8]) -> Result<String, ClientHelloError> {
    if !raw.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(ClientHelloError::Malformed(
            "host_name is not printable ASCII",
        ));
    }
    let name = raw.strip_suffix(b".").unwrap_or(raw);
    if name.is_empty() || name.len() > MAX_HOST_NAME {
        return Err(ClientHelloError::Malformed(
            "host_name is empty or longer than 255 bytes",
        ));
    }
    Ok(name
        .iter()
        .map(|b| char::from(b.to_ascii_lowercase()))
        .collect())
}

#[cfg(test)]
mod tests;
