//! A bound on each reply a Redis server sends, enforced on the socket, for
//! every Redis connection Tern makes: key-value stores on Redis here, and
//! the Spin SDK's Redis interfaces and trigger in `tern-runtime` and
//! `tern-http`.
//!
//! The `redis` crate reads a whole reply into host memory before anyone
//! sees it, however large: a guest that grows a key to 512MiB (one
//! `SETRANGE`) and reads it back would make the host hold that much per
//! request, past every limit of the guest's own. [`BoundedReplies`] wraps
//! the connection's stream and follows the RESP framing of what it reads
//! (RESP2 and RESP3), counting the bytes of the reply in progress. A reply
//! that grows past the bound, or that declares more than the bound (a bulk
//! string's length, an array's count), fails the read before the parser
//! buffers or reserves it: the command gets the error and the connection
//! is closed, to be made again by the next open.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, RedisConnectionInfo, RedisResult};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest reply (or pub-sub message) a Redis connection accepts, in
/// bytes, framing included: the bound on SQL values and key listings too.
pub const MAX_REDIS_REPLY: u64 = 16 << 20;

/// A multiplexed connection whose replies are bounded, shared by its
/// clones; the task that drives it stops when the last clone goes.
#[derive(Clone)]
pub struct Multiplexed {
    /// The connection, for commands.
    pub conn: MultiplexedConnection,
    _driver: Arc<Driver>,
}

/// Stops a connection's task when dropped.
struct Driver(tokio::task::JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Connects to `addr` (TCP or a Unix socket) and sets the connection up as
/// `settings` say (authentication, database), its replies bounded to `max`
/// bytes. Takes as long as it takes: callers put a timeout around it.
pub async fn connect(
    addr: &ConnectionAddr,
    settings: &RedisConnectionInfo,
    config: AsyncConnectionConfig,
    max: u64,
) -> RedisResult<Multiplexed> {
    match addr {
        ConnectionAddr::Tcp(host, port) => {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
            stream.set_nodelay(true)?;
            multiplexed(BoundedReplies::new(stream, max), settings, config).await
        }
        ConnectionAddr::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path).await?;
            multiplexed(BoundedReplies::new(stream, max), settings, config).await
        }
        _ => Err(redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "only redis:// and redis+unix:// addresses are supported (no TLS)",
        ))),
    }
}

async fn multiplexed<S>(
    stream: S,
    settings: &RedisConnectionInfo,
    config: AsyncConnectionConfig,
) -> RedisResult<Multiplexed>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (conn, driver) = MultiplexedConnection::new_with_config(settings, stream, config).await?;
    Ok(Multiplexed {
        conn,
        _driver: Arc::new(Driver(tokio::spawn(driver))),
    })
}

/// A Redis connection's stream, failing a read that takes a reply past
/// `max` bytes. Writes pass through.
pub struct BoundedReplies<S> {
    inner: S,
    scan: Scan,
    over: Arc<AtomicBool>,
}

impl<S> BoundedReplies<S> {
    /// Wraps `inner`, bounding each reply to `max` bytes.
    pub fn new(inner: S, max: u64) -> Self {
        BoundedReplies {
            inner,
            scan: Scan::new(max),
            over: Arc::default(),
        }
    }

    /// Becomes true once a reply went past the bound, for a log line
    /// saying why the connection ended.
    pub fn over_bound(&self) -> Arc<AtomicBool> {
        self.over.clone()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for BoundedReplies<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(refusal) = this.scan.failed {
            return Poll::Ready(Err(refusal.error(this.scan.max)));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Err(refusal) = this.scan.feed(&buf.filled()[before..]) {
            if refusal == Refusal::TooLarge {
                this.over.store(true, Ordering::Relaxed);
            }
            // Nothing of the refused reply reaches the parser.
            buf.set_filled(before);
            return Poll::Ready(Err(refusal.error(this.scan.max)));
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for BoundedReplies<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Why a read was refused.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Refusal {
    TooLarge,
    Malformed,
}

impl Refusal {
    fn error(self, max: u64) -> io::Error {
        let message = match self {
            Refusal::TooLarge => format!("a Redis reply over {} was refused", size(max)),
            Refusal::Malformed => "a malformed Redis reply was refused".to_owned(),
        };
        io::Error::new(io::ErrorKind::InvalidData, message)
    }
}

/// `bytes` as people write it: `16MiB`, `100 bytes`.
fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{}MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// Where the scanner is within the reply.
#[derive(Clone, Copy, Debug)]
enum State {
    /// A value's type byte comes next.
    Type,
    /// The header of a bulk string or aggregate of type `kind`: its length,
    /// then CR LF.
    Header {
        kind: u8,
        n: u64,
        negative: bool,
        digits: bool,
        cr: bool,
    },
    /// A one-line value (simple string, error, number, ...) up to CR LF.
    Line { cr: bool },
    /// A bulk string's bytes and their CR LF: how many are left.
    Bulk(u64),
}

/// Follows RESP framing byte by byte, counting the reply in progress.
struct Scan {
    max: u64,
    /// Bytes of the reply in progress so far.
    reply: u64,
    /// Values still to come in each open aggregate, innermost last.
    open: Vec<u64>,
    state: State,
    failed: Option<Refusal>,
}

impl Scan {
    fn new(max: u64) -> Self {
        Scan {
            max,
            reply: 0,
            open: Vec::new(),
            state: State::Type,
            failed: None,
        }
    }

    /// Takes `bytes` read off the connection.
    fn feed(&mut self, bytes: &[u8]) -> Result<(), Refusal> {
        let result = self.scan(bytes);
        if let Err(refusal) = result {
            self.failed = Some(refusal);
        }
        result
    }

    fn scan(&mut self, mut bytes: &[u8]) -> Result<(), Refusal> {
        while !bytes.is_empty() {
            if let State::Bulk(left) = self.state {
                // A bulk string's bytes are skipped in one step.
                let taken = left.min(bytes.len() as u64);
                self.count(taken)?;
                bytes = &bytes[taken as usize..];
                if taken == left {
                    self.value_done();
                } else {
                    self.state = State::Bulk(left - taken);
                }
                continue;
            }
            let byte = bytes[0];
            bytes = &bytes[1..];
            self.count(1)?;
            self.step(byte)?;
        }
        Ok(())
    }

    fn count(&mut self, n: u64) -> Result<(), Refusal> {
        self.reply += n;
        if self.reply > self.max {
            return Err(Refusal::TooLarge);
        }
        Ok(())
    }

    /// One byte outside a bulk string's contents.
    fn step(&mut self, byte: u8) -> Result<(), Refusal> {
        self.state = match self.state {
            State::Type => match byte {
                b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => State::Line { cr: false },
                b'$' | b'!' | b'=' | b'*' | b'~' | b'>' | b'%' | b'|' => State::Header {
                    kind: byte,
                    n: 0,
                    negative: false,
                    digits: false,
                    cr: false,
                },
                _ => return Err(Refusal::Malformed),
            },
            State::Line { cr: true } if byte == b'\n' => {
                self.value_done();
                return Ok(());
            }
            State::Line { .. } => State::Line { cr: byte == b'\r' },
            State::Header {
                kind,
                n,
                negative,
                digits,
                cr,
            } => match (byte, cr) {
                (b'\n', true) if digits => return self.header_done(kind, n, negative),
                (b'\r', false) if digits => State::Header {
                    kind,
                    n,
                    negative,
                    digits,
                    cr: true,
                },
                (b'-', false) if !digits && !negative => State::Header {
                    kind,
                    n,
                    negative: true,
                    digits,
                    cr,
                },
                (b'0'..=b'9', false) => {
                    let n = n
                        .checked_mul(10)
                        .and_then(|n| n.checked_add(u64::from(byte - b'0')))
                        .ok_or(Refusal::Malformed)?;
                    State::Header {
                        kind,
                        n,
                        negative,
                        digits: true,
                        cr,
                    }
                }
                _ => return Err(Refusal::Malformed),
            },
            State::Bulk(_) => unreachable!("bulk bytes are skipped in scan"),
        };
        Ok(())
    }

    /// A header's CR LF: a length of -1 is a null, done at once.
    fn header_done(&mut self, kind: u8, n: u64, negative: bool) -> Result<(), Refusal> {
        if negative {
            if n != 1 {
                return Err(Refusal::Malformed);
            }
            self.value_done();
            return Ok(());
        }
        // What the header declares must fit, before the parser reserves it:
        // a bulk string's bytes, or at least three bytes per element.
        let (declared, values) = match kind {
            b'$' | b'!' | b'=' => (n.saturating_add(2), None),
            b'*' | b'~' | b'>' => (n.saturating_mul(3), Some(n)),
            b'%' => (n.saturating_mul(6), Some(n.saturating_mul(2))),
            // Attributes come before the value they describe, which
            // counts as the aggregate's one value.
            _ => (n.saturating_mul(6), Some(n.saturating_mul(2) + 1)),
        };
        if self.reply.saturating_add(declared) > self.max {
            return Err(Refusal::TooLarge);
        }
        match values {
            None => self.state = State::Bulk(n + 2),
            Some(0) => self.value_done(),
            Some(values) => {
                self.open.push(values);
                self.state = State::Type;
            }
        }
        Ok(())
    }

    /// A value ended: the aggregates it ends end too, and a reply that
    /// ends starts the count again.
    fn value_done(&mut self) {
        self.state = State::Type;
        while let Some(left) = self.open.last_mut() {
            *left -= 1;
            if *left > 0 {
                return;
            }
            self.open.pop();
        }
        self.reply = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` in pieces of `step`, answering the reply count after.
    fn scan(max: u64, bytes: &[u8], step: usize) -> Result<u64, Refusal> {
        let mut scan = Scan::new(max);
        for piece in bytes.chunks(step) {
            scan.feed(piece)?;
        }
        Ok(scan.reply)
    }

    #[test]
    fn replies_within_the_bound_pass_in_any_pieces() {
        let replies: &[&[u8]] = &[
            b"+OK\r\n",
            b"-ERR no\r\n",
            b":42\r\n",
            b"$5\r\nhello\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
            b"%1\r\n+k\r\n$1\r\nv\r\n",
            b"|1\r\n+ttl\r\n:3\r\n$2\r\nhi\r\n",
            b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$4\r\nbody\r\n",
            b"_\r\n#t\r\n,1.5\r\n(12345\r\n=7\r\ntxt:abc\r\n",
        ];
        let all: Vec<u8> = replies.concat();
        for step in [1, 2, 3, 7, all.len()] {
            assert_eq!(scan(64, &all, step), Ok(0), "in pieces of {step}");
        }
        // The same replies one after another stay within a small bound:
        // each reply's count starts again.
        let many = all.repeat(1000);
        assert_eq!(scan(64, &many, 4096), Ok(0));
    }

    #[test]
    fn a_reply_past_the_bound_is_refused_before_it_is_read() {
        // Declared larger than the bound: refused at its header.
        assert_eq!(scan(100, b"$200\r\n", 1), Err(Refusal::TooLarge));
        assert_eq!(scan(100, b"*1000\r\n", 1), Err(Refusal::TooLarge));
        assert_eq!(scan(100, b"%20\r\n", 1), Err(Refusal::TooLarge));
        // Many small values that add up past it.
        let mut big = b"*40\r\n".to_vec();
        for _ in 0..40 {
            big.extend_from_slice(b"$1\r\nx\r\n");
        }
        assert_eq!(scan(100, &big, 5), Err(Refusal::TooLarge));
        assert_eq!(scan(500, &big, 5), Ok(0));
        // A line without end.
        assert_eq!(scan(100, &[b'+'; 200], 50), Err(Refusal::TooLarge));
    }

    #[test]
    fn a_malformed_reply_is_refused() {
        for bad in [&b"?\r\n"[..], b"$x\r\n", b"$\r\n", b"$-2\r\n", b"*--1\r\n"] {
            assert_eq!(scan(100, bad, 1), Err(Refusal::Malformed), "{bad:?}");
        }
        assert_eq!(
            scan(u64::MAX, b"$99999999999999999999999\r\n", 1),
            Err(Refusal::Malformed)
        );
    }

    #[tokio::test]
    async fn a_refused_read_reaches_the_reader_and_stays_refused() {
        use tokio::io::AsyncReadExt;
        let (mut server, client) = tokio::io::duplex(1 << 16);
        let mut bounded = BoundedReplies::new(client, 10);
        let over = bounded.over_bound();
        tokio::io::AsyncWriteExt::write_all(&mut server, b"+OK\r\n$20\r\n")
            .await
            .unwrap();
        let mut buf = [0; 64];
        let error = bounded.read(&mut buf).await.unwrap_err();
        assert!(error.to_string().contains("over 10 bytes"), "{error}");
        assert!(over.load(Ordering::Relaxed));
        assert!(bounded.read(&mut buf).await.is_err());
    }
}
