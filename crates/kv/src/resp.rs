//! A bound on each reply a Redis server sends, enforced on the socket, for
//! every Redis connection Tern makes: key-value stores on Redis here, and
//! the Spin SDK's Redis interfaces and trigger in `tern-runtime` and
//! `tern-http`.
//!
//! The `redis` crate reads a whole reply into host memory before anyone
//! sees it, however large: a guest that grows a key to 512MiB (one
//! `SETRANGE`) and reads it back would make the host hold that much per
//! request, past every limit of the guest's own. `BoundedReplies` wraps
//! the connection's stream and follows the RESP framing of what it reads
//! (RESP2 and RESP3), counting the reply in progress as it will be held:
//! its bytes, and [`VALUE_COST`] for each value in it, so a reply of
//! millions of tiny values counts as the memory it takes parsed. A reply
//! that grows past the bound, or that declares more than the bound (a bulk
//! string's length, an array's count), fails the read before the parser
//! buffers or reserves it: the command gets the error and the connection
//! is closed, to be made again by the next open. Replies that came whole
//! before it in the same read still reach their commands.
//!
//! A pub/sub [`Subscription`] reads through the same count, and reads the
//! next message off the socket only when asked for it: a subscriber that
//! falls behind leaves what is published meanwhile with the server, which
//! drops it past its own output-buffer limit as it drops any slow
//! subscriber, instead of queueing it in Tern's memory.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, RedisConnectionInfo, RedisResult, Value};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};

/// The largest reply (or pub-sub message) a Redis connection accepts, in
/// bytes, framing included: the bound on SQL values and key listings too.
pub const MAX_REDIS_REPLY: u64 = 16 << 20;

/// What each value of a reply counts for beside its bytes: the size of a
/// parsed value.
pub const VALUE_COST: u64 = std::mem::size_of::<Value>() as u64;

/// A multiplexed connection whose replies are bounded, shared by its
/// clones; the task that drives it stops when the last clone goes.
#[derive(Clone)]
pub struct Multiplexed {
    /// The connection, for commands.
    pub conn: MultiplexedConnection,
    _driver: std::sync::Arc<Driver>,
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
    let stream = BoundedReplies::new(dial(addr).await?, max);
    let (conn, driver) = MultiplexedConnection::new_with_config(settings, stream, config).await?;
    Ok(Multiplexed {
        conn,
        _driver: std::sync::Arc::new(Driver(tokio::spawn(driver))),
    })
}

/// A socket of either kind.
trait Socket: AsyncRead + AsyncWrite + Send + Unpin {}

impl<S: AsyncRead + AsyncWrite + Send + Unpin> Socket for S {}

/// Opens a socket to `addr`.
async fn dial(addr: &ConnectionAddr) -> RedisResult<Box<dyn Socket>> {
    Ok(match addr {
        ConnectionAddr::Tcp(host, port) => {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
            stream.set_nodelay(true)?;
            Box::new(stream)
        }
        ConnectionAddr::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
        _ => {
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "only redis:// and redis+unix:// addresses are supported (no TLS)",
            )));
        }
    })
}

/// How long a subscription waits in silence before it asks the server
/// whether it is there (`PING`), and then for the answer.
pub const SUBSCRIPTION_IDLE: Duration = Duration::from_secs(60);

/// A connection subscribed to channels (RESP2 pub/sub), each message
/// bounded as a reply is.
pub struct Subscription {
    socket: Box<dyn Socket>,
    scan: Scan,
    /// Bytes read and not yet handed out; the first `scanned` of them
    /// scanned.
    buf: Vec<u8>,
    scanned: usize,
}

impl Subscription {
    /// Connects to `addr`, authenticates as `settings` say and subscribes
    /// to `channels`, each message bounded to `max` bytes. Takes as long as
    /// it takes: callers put a timeout around it.
    pub async fn open(
        addr: &ConnectionAddr,
        settings: &RedisConnectionInfo,
        channels: &[String],
        max: u64,
    ) -> RedisResult<Self> {
        Subscription::over(dial(addr).await?, settings, channels, max).await
    }

    async fn over(
        socket: Box<dyn Socket>,
        settings: &RedisConnectionInfo,
        channels: &[String],
        max: u64,
    ) -> RedisResult<Self> {
        let mut subscription = Subscription {
            socket,
            scan: Scan::new(max),
            buf: Vec::new(),
            scanned: 0,
        };
        if let Some(password) = settings.password() {
            let mut auth = redis::cmd("AUTH");
            if let Some(username) = settings.username() {
                auth.arg(username);
            }
            subscription.send(auth.arg(password)).await?;
            subscription.next_reply().await?;
        }
        subscription
            .send(redis::cmd("SUBSCRIBE").arg(channels))
            .await?;
        // One confirmation per channel, before any message.
        for _ in channels {
            subscription.next_reply().await?;
        }
        Ok(subscription)
    }

    /// The next message: its channel and payload. An error ends the
    /// subscription: the connection was lost, a message was over the
    /// bound ([`Subscription::refused`]), or the server did not answer a
    /// `PING` after [`SUBSCRIPTION_IDLE`] of silence.
    pub async fn next_message(&mut self) -> RedisResult<(String, Vec<u8>)> {
        loop {
            let Value::Array(parts) = self.next_reply().await? else {
                continue;
            };
            let mut parts = parts.into_iter();
            // `message CHANNEL PAYLOAD`; a `pong` or confirmation is skipped.
            if let (
                Some(Value::BulkString(kind)),
                Some(Value::BulkString(channel)),
                Some(Value::BulkString(payload)),
            ) = (parts.next(), parts.next(), parts.next())
                && kind == b"message"
            {
                return Ok((String::from_utf8_lossy(&channel).into_owned(), payload));
            }
        }
    }

    /// Whether the subscription ended on a message over the bound.
    pub fn refused(&self) -> bool {
        self.scan.failed == Some(Refusal::TooLarge)
    }

    async fn send(&mut self, cmd: &redis::Cmd) -> RedisResult<()> {
        self.socket.write_all(&cmd.get_packed_command()).await?;
        Ok(())
    }

    /// Reads the next reply whole, and no further than a read ahead of
    /// it; a server error is an error.
    async fn next_reply(&mut self) -> RedisResult<Value> {
        let mut pinged = false;
        loop {
            if self.scanned < self.buf.len() {
                let (scanned, ended) = self
                    .scan
                    .scan_reply(&self.buf[self.scanned..])
                    .map_err(|refusal| refusal.error(self.scan.max))?;
                self.scanned += scanned;
                if ended {
                    let reply = redis::parse_redis_value(&self.buf[..self.scanned]);
                    self.buf.drain(..self.scanned);
                    self.scanned = 0;
                    // What one large message grew it to goes with it.
                    if self.buf.capacity() > 4 * READ_AHEAD {
                        self.buf.shrink_to(2 * READ_AHEAD);
                    }
                    return reply?.extract_error();
                }
                continue;
            }
            self.buf.reserve(READ_AHEAD);
            match tokio::time::timeout(SUBSCRIPTION_IDLE, self.socket.read_buf(&mut self.buf)).await
            {
                Ok(Ok(0)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    )
                    .into());
                }
                Ok(read) => {
                    read?;
                    pinged = false;
                }
                Err(_) if !pinged => {
                    // A server that does not read either is given up too.
                    let ping = redis::cmd("PING");
                    match tokio::time::timeout(SUBSCRIPTION_IDLE, self.send(&ping)).await {
                        Ok(sent) => sent?,
                        Err(_) => return Err(silent()),
                    }
                    pinged = true;
                }
                Err(_) => return Err(silent()),
            }
        }
    }
}

/// How much a subscription reads at once.
const READ_AHEAD: usize = 64 << 10;

/// Why a subscription to a server that went silent ended.
fn silent() -> redis::RedisError {
    let message = format!("no answer to PING in {}s", SUBSCRIPTION_IDLE.as_secs());
    io::Error::new(io::ErrorKind::TimedOut, message).into()
}

/// A Redis connection's stream, failing a read that takes a reply past
/// `max` bytes. Writes pass through.
struct BoundedReplies<S> {
    inner: S,
    scan: Scan,
}

impl<S> BoundedReplies<S> {
    /// Wraps `inner`, bounding each reply to `max` bytes.
    fn new(inner: S, max: u64) -> Self {
        BoundedReplies {
            inner,
            scan: Scan::new(max),
        }
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
        let mut scanned = before;
        // Where the last reply that ended in this read ends.
        let mut whole = before;
        while scanned < buf.filled().len() {
            match this.scan.scan_reply(&buf.filled()[scanned..]) {
                Ok((n, ended)) => {
                    scanned += n;
                    if ended {
                        whole = scanned;
                    }
                }
                Err(refusal) => {
                    // Nothing of the refused reply reaches the parser; the
                    // replies before it do, and the next read fails.
                    buf.set_filled(whole);
                    if whole > before {
                        return Poll::Ready(Ok(()));
                    }
                    return Poll::Ready(Err(refusal.error(this.scan.max)));
                }
            }
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

/// Follows RESP framing byte by byte, counting the reply in progress:
/// its bytes, and [`VALUE_COST`] for each value.
struct Scan {
    max: u64,
    /// What the reply in progress counts for so far.
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

    /// Scans `bytes` up to the end of the first reply that ends in them:
    /// how many it took, and whether a reply ended there. A refusal
    /// stays: every later scan fails with it.
    fn scan_reply(&mut self, bytes: &[u8]) -> Result<(usize, bool), Refusal> {
        if let Some(refusal) = self.failed {
            return Err(refusal);
        }
        let result = self.up_to_reply_end(bytes);
        if let Err(refusal) = result {
            self.failed = Some(refusal);
        }
        result
    }

    fn up_to_reply_end(&mut self, bytes: &[u8]) -> Result<(usize, bool), Refusal> {
        let mut at = 0;
        while at < bytes.len() {
            let ended = if let State::Bulk(left) = self.state {
                // A bulk string's bytes are skipped in one step.
                let taken = left.min((bytes.len() - at) as u64);
                self.count(taken)?;
                at += taken as usize;
                if taken == left {
                    self.value_done()
                } else {
                    self.state = State::Bulk(left - taken);
                    false
                }
            } else {
                let byte = bytes[at];
                at += 1;
                self.count(1)?;
                self.step(byte)?
            };
            if ended {
                return Ok((at, true));
            }
        }
        Ok((at, false))
    }

    fn count(&mut self, n: u64) -> Result<(), Refusal> {
        self.reply = self.reply.saturating_add(n);
        if self.reply > self.max {
            return Err(Refusal::TooLarge);
        }
        Ok(())
    }

    /// One byte outside a bulk string's contents: whether a reply ended
    /// with it.
    fn step(&mut self, byte: u8) -> Result<bool, Refusal> {
        if let State::Type = self.state {
            self.count(VALUE_COST)?;
        }
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
            State::Line { cr: true } if byte == b'\n' => return Ok(self.value_done()),
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
            State::Bulk(_) => unreachable!("bulk bytes are skipped in up_to_reply_end"),
        };
        Ok(false)
    }

    /// A header's CR LF: a length of -1 is a null, done at once. Whether
    /// a reply ended with it.
    fn header_done(&mut self, kind: u8, n: u64, negative: bool) -> Result<bool, Refusal> {
        if negative {
            // Only bulk strings and arrays, sets and pushes have a null
            // form; the parser would wait for ever on a blob error's or
            // verbatim string's -1, holding all that follows.
            if n != 1 || !matches!(kind, b'$' | b'*' | b'~' | b'>') {
                return Err(Refusal::Malformed);
            }
            return Ok(self.value_done());
        }
        // What the header declares must fit, before the parser reserves it:
        // a bulk string's bytes, or for each element at least three bytes
        // and its value.
        let element = 3 + VALUE_COST;
        let (declared, values) = match kind {
            b'$' | b'!' | b'=' => (n.saturating_add(2), None),
            b'*' | b'~' | b'>' => (n.saturating_mul(element), Some(n)),
            b'%' => (
                n.saturating_mul(2).saturating_mul(element),
                Some(n.saturating_mul(2)),
            ),
            // Attributes come before the value they describe, which
            // counts as the aggregate's one value.
            _ => (
                n.saturating_mul(2).saturating_mul(element),
                Some(n.saturating_mul(2).saturating_add(1)),
            ),
        };
        if self.reply.saturating_add(declared) > self.max {
            return Err(Refusal::TooLarge);
        }
        match values {
            None => self.state = State::Bulk(n.checked_add(2).ok_or(Refusal::Malformed)?),
            Some(0) => return Ok(self.value_done()),
            Some(values) => {
                self.open.push(values);
                self.state = State::Type;
            }
        }
        Ok(false)
    }

    /// A value ended: the aggregates it ends end too. Whether the reply
    /// ended, which starts the count again.
    fn value_done(&mut self) -> bool {
        self.state = State::Type;
        while let Some(left) = self.open.last_mut() {
            *left -= 1;
            if *left > 0 {
                return false;
            }
            self.open.pop();
        }
        self.reply = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` in pieces of `step`: how many replies ended, and what
    /// the reply in progress counts for after.
    fn scan(max: u64, bytes: &[u8], step: usize) -> Result<(usize, u64), Refusal> {
        let mut scan = Scan::new(max);
        let mut replies = 0;
        for mut piece in bytes.chunks(step) {
            while !piece.is_empty() {
                let (n, ended) = scan.scan_reply(piece)?;
                replies += usize::from(ended);
                piece = &piece[n..];
            }
        }
        Ok((replies, scan.reply))
    }

    /// A reply of `n` values, all `*1\r\n:1\r\n` nested: `n` values,
    /// `4 * n` bytes.
    fn nested(n: usize) -> Vec<u8> {
        let mut reply = b"*1\r\n".repeat(n - 1);
        reply.extend_from_slice(b":1\r\n");
        reply
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
        let max = 4 * (VALUE_COST + 16);
        for step in [1, 2, 3, 7, all.len()] {
            assert_eq!(scan(max, &all, step), Ok((16, 0)), "in pieces of {step}");
        }
        // The same replies one after another stay within a small bound:
        // each reply's count starts again.
        let many = all.repeat(1000);
        assert_eq!(scan(max, &many, 4096), Ok((16000, 0)));
    }

    #[test]
    fn a_reply_past_the_bound_is_refused_before_it_is_read() {
        // Declared larger than the bound: refused at its header.
        assert_eq!(scan(100, b"$200\r\n", 1), Err(Refusal::TooLarge));
        let max = 10 * VALUE_COST;
        assert_eq!(scan(max, b"*10\r\n", 1), Err(Refusal::TooLarge));
        assert_eq!(scan(max, b"%5\r\n", 1), Err(Refusal::TooLarge));
        assert_eq!(scan(max, b"|5\r\n", 1), Err(Refusal::TooLarge));
        // Many small values that add up past it: each counts as the
        // memory it takes parsed, not only its bytes.
        let values = nested(40);
        assert_eq!(scan(40 * VALUE_COST, &values, 5), Err(Refusal::TooLarge));
        assert_eq!(scan(40 * (VALUE_COST + 4), &values, 5), Ok((1, 0)));
        // A line without end.
        assert_eq!(scan(100, &[b'+'; 200], 50), Err(Refusal::TooLarge));
        // A refusal stays.
        let mut refused = Scan::new(100);
        assert_eq!(refused.scan_reply(b"$200\r\n"), Err(Refusal::TooLarge));
        assert_eq!(refused.scan_reply(b"+OK\r\n"), Err(Refusal::TooLarge));
    }

    #[test]
    fn a_malformed_reply_is_refused() {
        for bad in [
            &b"?\r\n"[..],
            b"$x\r\n",
            b"$\r\n",
            b"$-2\r\n",
            b"*--1\r\n",
            b"!-1\r\n",
            b"=-1\r\n",
            b"%-1\r\n",
        ] {
            assert_eq!(scan(1000, bad, 1), Err(Refusal::Malformed), "{bad:?}");
        }
        assert_eq!(
            scan(u64::MAX, b"$99999999999999999999999\r\n", 1),
            Err(Refusal::Malformed)
        );
        // Counts that overflow saturate into a refusal, not a panic.
        assert_eq!(
            scan(1 << 40, b"|18446744073709551615\r\n", 1),
            Err(Refusal::TooLarge)
        );
    }

    #[tokio::test]
    async fn replies_before_a_refused_one_reach_the_reader_then_the_refusal() {
        let (mut server, client) = tokio::io::duplex(1 << 16);
        let mut bounded = BoundedReplies::new(client, 10 + VALUE_COST);
        server.write_all(b"+OK\r\n:1\r\n$20\r\n").await.unwrap();
        let mut buf = [0; 64];
        let n = bounded.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"+OK\r\n:1\r\n");
        let error = bounded.read(&mut buf).await.unwrap_err();
        assert!(error.to_string().contains("over 66 bytes"), "{error}");
        assert!(bounded.read(&mut buf).await.is_err());
    }

    /// A subscription to `ch` over one end of a pipe of `capacity` bytes,
    /// past its handshake; the server's end, and the first command the
    /// server read.
    async fn subscribed(
        capacity: usize,
        settings: &RedisConnectionInfo,
    ) -> (Subscription, tokio::io::DuplexStream, String) {
        let (mut server, client) = tokio::io::duplex(capacity);
        let confirm = async {
            let mut command = vec![0; 256];
            let n = server.read(&mut command).await.unwrap();
            let command = String::from_utf8_lossy(&command[..n]).into_owned();
            if command.contains("AUTH") {
                server.write_all(b"+OK\r\n").await.unwrap();
                let mut more = vec![0; 256];
                let n = server.read(&mut more).await.unwrap();
                more.truncate(n);
                assert!(String::from_utf8_lossy(&more).contains("SUBSCRIBE"));
            }
            server
                .write_all(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n")
                .await
                .unwrap();
            command
        };
        let channels = ["ch".to_owned()];
        let opening = Subscription::over(Box::new(client), settings, &channels, 1 << 20);
        let (subscription, command) = tokio::join!(opening, confirm);
        (subscription.unwrap(), server, command)
    }

    fn message(payload: &[u8]) -> Vec<u8> {
        let mut message = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n".to_vec();
        message.extend_from_slice(format!("${}\r\n", payload.len()).as_bytes());
        message.extend_from_slice(payload);
        message.extend_from_slice(b"\r\n");
        message
    }

    #[tokio::test]
    async fn a_subscription_reads_the_next_message_only_when_asked() {
        let (mut subscription, mut server, command) = subscribed(4096, &Default::default()).await;
        assert_eq!(command, "*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n");
        // Forty messages of 1000 bytes, through a pipe of 4096 bytes: the
        // server writes only as fast as the subscription reads.
        let messages: Vec<u8> = (0..40u8)
            .flat_map(|n| message(&[b'a' + n % 26; 1000]))
            .collect();
        let writer = tokio::spawn(async move {
            server.write_all(&messages).await.unwrap();
            server
        });
        let (channel, payload) = subscription.next_message().await.unwrap();
        assert_eq!((channel.as_str(), payload), ("ch", vec![b'a'; 1000]));
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        // One message taken, and no more read than a read ahead of it: the
        // rest waits with the server.
        assert!(!writer.is_finished());
        for n in 1..40u8 {
            let (_, payload) = subscription.next_message().await.unwrap();
            assert_eq!(payload, vec![b'a' + n % 26; 1000]);
        }
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_subscription_authenticates_first() {
        let settings = RedisConnectionInfo::default()
            .set_username("app")
            .set_password("s3cret");
        let (mut subscription, mut server, command) = subscribed(4096, &settings).await;
        assert_eq!(command, "*3\r\n$4\r\nAUTH\r\n$3\r\napp\r\n$6\r\ns3cret\r\n");
        server.write_all(&message(b"hi")).await.unwrap();
        assert_eq!(subscription.next_message().await.unwrap().1, b"hi");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_is_asked_and_then_given_up() {
        let (mut subscription, mut server, _) = subscribed(4096, &Default::default()).await;
        let (ended, asked) = tokio::join!(subscription.next_message(), async {
            let mut ping = [0; 64];
            let n = server.read(&mut ping).await.unwrap();
            ping[..n].to_vec()
        });
        assert_eq!(asked, b"*1\r\n$4\r\nPING\r\n");
        let error = ended.unwrap_err().to_string();
        assert!(error.contains("no answer to PING in 60s"), "{error}");
        // A server that answers keeps the subscription.
        let (mut subscription, mut server, _) = subscribed(4096, &Default::default()).await;
        let (next, ()) = tokio::join!(subscription.next_message(), async {
            let mut ping = [0; 14];
            server.read_exact(&mut ping).await.unwrap();
            server
                .write_all(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n")
                .await
                .unwrap();
            server.write_all(&message(b"late")).await.unwrap();
        });
        assert_eq!(next.unwrap().1, b"late");
    }
}
