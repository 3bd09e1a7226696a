//! One task per client connection: read frames, decode, dispatch, and write responses back in
//! request order.
//!
//! **Order.** Requests on a connection take effect one at a time, in the order they were sent
//! (Kafka's guarantee): the next frame is dispatched only when the request before it has
//! released its *turn*, which a handler does when it returns, or, for Produce, once its
//! batches are appended (so acks=all waits for replication overlap while appends stay in
//! order). While a request holds its turn the connection is muted, as Kafka mutes a channel
//! with a request in progress; bytes of the next frames are still read into the buffer.
//!
//! **Limits** (see [`ConnectionLimits`]): a frame's length is checked against
//! `socket.request.max.bytes` and its bytes are reserved from the node's
//! `queued.max.request.bytes` pool before the rest is read; the whole frame must arrive within
//! `socket.request.read.timeout.ms` of its first byte; a dispatched request holds one of the
//! node's `queued.max.requests` slots until its handler first parks or finishes; a connection
//! with nothing to do is closed after `connections.max.idle.ms`, as is one whose client stops
//! reading responses for that long; and no request is dispatched while more than
//! `socket.send.buffer.bytes` of responses wait for the client to read them.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, StreamExt};
use futures::FutureExt;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{decode_request_header_from_buffer, Encodable};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit};
use tokio::time::Instant;

use crate::frame::{frame_size, raw_header, take_frame, RawHeader};
use crate::handlers;
use crate::limits::ConnectionLimits;
use crate::Context;

/// Requests one connection may have unanswered before the node stops reading from it. Bounds
/// what a pipelining client can make the node hold (acks=all produce requests waiting for
/// replication, mostly).
const MAX_IN_FLIGHT_PER_CONNECTION: usize = 128;

/// A decoded request with what is needed to answer it.
pub(crate) struct Request {
    pub(crate) header: RequestHeader,
    pub(crate) api_key: ApiKey,
    pub(crate) body: RequestKind,
    pub(crate) peer: SocketAddr,
}

/// A request's place in its connection's order: the next request is dispatched once this is
/// released or dropped.
pub(crate) struct Turn(Option<oneshot::Sender<()>>);

impl Turn {
    /// A turn that orders nothing, for calling handlers directly in tests.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn detached() -> Turn {
        Turn(None)
    }

    /// Lets the connection's next request start; this one's remaining work (waiting for
    /// replication) has no effect later requests could observe out of order.
    pub(crate) fn release(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

impl Turn {
    /// Runs `fut`, releasing the turn as soon as it first waits (or finishes): for handlers
    /// whose effects happen before they park.
    pub(crate) async fn release_when_parked<F: Future>(&mut self, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        futures::future::poll_fn(|cx| {
            let poll = fut.as_mut().poll(cx);
            self.release();
            poll
        })
        .await
    }
}

/// What a finished request asks of the connection.
enum Outcome {
    Send(Bytes),
    /// acks=0 produce: Kafka sends nothing back.
    Nothing,
    /// Close the connection: a failed acks=0 produce (the client's only signal), or a
    /// response that could not be encoded (a bug, logged; the client would wait forever).
    Close,
}

type InFlight = FuturesOrdered<BoxFuture<'static, Outcome>>;

/// What to do with a frame that could not become a [`Request`].
pub(crate) enum Rejected {
    /// Answer with these bytes (ApiVersions with an unsupported version).
    Answer(Bytes),
    /// Close the connection; the reason was logged.
    Close,
}

/// Why the connection loop stopped.
enum Closing {
    /// The client closed, a read failed, or shutdown: answer what is in flight, then close.
    Drain,
    /// Close now.
    Now,
}

pub(crate) async fn run(
    socket: TcpStream,
    peer: SocketAddr,
    ctx: Arc<Context>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = ctx.limits.clone();
    let (mut reader, writer) = socket.into_split();
    let mut writer = BufWriter::new(writer);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut in_flight: InFlight = FuturesOrdered::new();
    // Response bytes produced and not yet written: added by a request when it finishes,
    // taken off once written.
    let unwritten = Arc::new(AtomicUsize::new(0));
    // The turn of the request dispatched last, until it releases it.
    let mut turn: Option<oneshot::Receiver<()>> = None;
    // Pool memory reserved for the frame at the front of `buf`.
    let mut frame_memory: Option<OwnedSemaphorePermit> = None;
    // When the first byte of the (incomplete) frame at the front of `buf` arrived.
    let mut partial_since: Option<Instant> = None;
    let mut last_activity = Instant::now();
    // One timer for both deadlines, moved only when the deadline changes.
    let timer = tokio::time::sleep_until(last_activity + limits.idle);
    tokio::pin!(timer);
    let mut armed = None;
    // False once the client closed its side, a read failed or the connection must close.
    let mut reading = true;
    let mut shutting_down = false;
    tracing::debug!(%peer, "connection opened");

    let closing = loop {
        let front = match frame_size(&buf, limits.max_frame) {
            Ok(size) => size,
            Err(e) => {
                limits.warnings.warn(|suppressed| {
                    tracing::warn!(%peer, error = %e, suppressed, "closing connection: bad request frame");
                });
                break Closing::Drain;
            }
        };
        let complete = front.is_some_and(|size| buf.len() >= 4 + size);
        // Frames the client sent in full before closing its side are still answered.
        let more_requests = complete && !shutting_down;
        if !reading && !more_requests && in_flight.is_empty() {
            break Closing::Drain;
        }
        partial_since = match (front.is_none() && buf.is_empty()) || complete {
            true => None,
            false => partial_since.or(Some(Instant::now())),
        };
        let needs_memory = front.is_some() && frame_memory.is_none() && limits.has_memory_pool();
        let can_dispatch = more_requests
            && turn.is_none()
            && !needs_memory
            && in_flight.len() < MAX_IN_FLIGHT_PER_CONNECTION
            && unwritten.load(Ordering::Acquire) < limits.unwritten_max;
        let can_read = reading && !complete && !needs_memory;
        if let (true, Some(size)) = (can_read, front) {
            // Room for the whole frame at once, so a large one is read without reallocations.
            buf.reserve(4 + size - buf.len());
        }
        let deadline = match partial_since {
            Some(since) => Some(since + limits.frame_read_timeout),
            None if in_flight.is_empty() && buf.is_empty() => Some(last_activity + limits.idle),
            None => None,
        };

        if deadline != armed {
            if let Some(at) = deadline {
                timer.as_mut().reset(at);
            }
            armed = deadline;
        }

        tokio::select! {
            // Responses first, so a pipelining client cannot starve its own answers.
            biased;
            Some(outcome) = in_flight.next(), if !in_flight.is_empty() => {
                if !write_outcomes(outcome, &mut in_flight, &mut writer, &unwritten, &limits, peer).await {
                    break Closing::Now;
                }
                last_activity = Instant::now();
            }
            _ = async { turn.as_mut().expect("guarded").await }, if turn.is_some() => {
                turn = None;
            }
            memory = limits.reserve_memory(4 + front.unwrap_or(0)), if needs_memory => {
                frame_memory = memory;
            }
            permit = async { limits.queued.clone().acquire_owned().await }, if can_dispatch => {
                let Ok(permit) = permit else { break Closing::Drain };
                let frame = take_frame(&mut buf, limits.max_frame)
                    .expect("framed above")
                    .expect("complete above");
                let memory = frame_memory.take();
                match decode(frame, peer, &limits) {
                    Ok(request) => {
                        let (tx, rx) = oneshot::channel();
                        turn = Some(rx);
                        let ctx = ctx.clone();
                        let unwritten = unwritten.clone();
                        in_flight.push_back(
                            respond(ctx, request, Turn(Some(tx)), permit, memory, unwritten).boxed(),
                        );
                    }
                    Err(Rejected::Answer(bytes)) => {
                        unwritten.fetch_add(bytes.len(), Ordering::AcqRel);
                        in_flight.push_back(futures::future::ready(Outcome::Send(bytes)).boxed());
                    }
                    Err(Rejected::Close) => {
                        reading = false;
                        shutting_down = true;
                    }
                }
            }
            read = reader.read_buf(&mut buf), if can_read => {
                match read {
                    Ok(0) => {
                        if !buf.is_empty() && !complete {
                            limits.warnings.warn(|suppressed| {
                                tracing::warn!(%peer, bytes = buf.len(), suppressed,
                                    "client closed the connection in the middle of a request frame");
                            });
                        }
                        reading = false;
                    }
                    Ok(_) => last_activity = Instant::now(),
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "read failed");
                        reading = false;
                    }
                }
            }
            _ = &mut timer, if deadline.is_some() => {
                if partial_since.is_some() {
                    limits.warnings.warn(|suppressed| {
                        tracing::warn!(%peer, bytes = buf.len(), timeout = ?limits.frame_read_timeout, suppressed,
                            "closing connection: a request frame did not arrive in full within socket.request.read.timeout.ms");
                    });
                } else {
                    tracing::debug!(%peer, idle = ?limits.idle, "closing idle connection (connections.max.idle.ms)");
                }
                break Closing::Now;
            }
            _ = shutdown.changed(), if !shutting_down => {
                // Stop taking requests; answer those already in flight, then close.
                reading = false;
                shutting_down = true;
            }
        }
    };
    if matches!(closing, Closing::Drain) {
        while let Some(outcome) = in_flight.next().await {
            if !write_outcomes(
                outcome,
                &mut in_flight,
                &mut writer,
                &unwritten,
                &limits,
                peer,
            )
            .await
            {
                break;
            }
        }
    }
    let _ = tokio::time::timeout(limits.idle, writer.shutdown()).await;
    tracing::debug!(%peer, "connection closed");
}

/// Writes `first` and every outcome already finished behind it, then flushes. False when the
/// connection must close: a write failed, a response asked for it, or the client did not read
/// for `connections.max.idle.ms`.
async fn write_outcomes(
    first: Outcome,
    in_flight: &mut InFlight,
    writer: &mut BufWriter<OwnedWriteHalf>,
    unwritten: &AtomicUsize,
    limits: &ConnectionLimits,
    peer: SocketAddr,
) -> bool {
    let write = async {
        let mut next = Some(first);
        while let Some(outcome) = next.take() {
            match outcome {
                Outcome::Send(bytes) => {
                    writer.write_all(&bytes).await?;
                    unwritten.fetch_sub(bytes.len(), Ordering::AcqRel);
                }
                Outcome::Nothing => {}
                Outcome::Close => {
                    writer.flush().await?;
                    return Ok(false);
                }
            }
            next = in_flight.next().now_or_never().flatten();
        }
        writer.flush().await?;
        Ok::<_, std::io::Error>(true)
    };
    match tokio::time::timeout(limits.idle, write).await {
        Ok(Ok(keep)) => keep,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "write failed");
            false
        }
        Err(_) => {
            limits.warnings.warn(|suppressed| {
                tracing::warn!(%peer, idle = ?limits.idle, suppressed,
                    "closing connection: the client read none of its responses for connections.max.idle.ms");
            });
            false
        }
    }
}

pub(crate) fn decode(
    mut frame: Bytes,
    peer: SocketAddr,
    limits: &ConnectionLimits,
) -> Result<Request, Rejected> {
    let RawHeader {
        api_key: key,
        api_version: version,
        correlation_id,
    } = raw_header(&frame);
    let warn = |what: &str, detail: String| {
        limits.warnings.warn(|suppressed| {
            tracing::warn!(%peer, api_key = key, version, correlation_id, suppressed, "closing connection: {what}{detail}");
        });
    };
    let Ok(api_key) = ApiKey::try_from(key) else {
        warn("unknown API key", String::new());
        return Err(Rejected::Close);
    };
    let Some(range) = handlers::supported_versions(api_key) else {
        warn("API not supported by Runnel", format!(" ({api_key:?})"));
        return Err(Rejected::Close);
    };
    if version < range.min || version > range.max {
        if api_key == ApiKey::ApiVersions {
            // KIP-511: answer with v0 and UNSUPPORTED_VERSION so the client can downgrade.
            tracing::debug!(%peer, version, "ApiVersions version unsupported; answering v0");
            let response = handlers::api_versions::unsupported_version_response();
            return encode_response(api_key, 0, correlation_id, &response, peer)
                .map(Rejected::Answer)
                .ok_or(Rejected::Close)
                .and_then(Err);
        }
        warn(
            "unsupported API version",
            format!(" ({api_key:?}, supported {}..={})", range.min, range.max),
        );
        return Err(Rejected::Close);
    }
    // Walk the frame against its schema first: kafka-protocol sizes allocations from counts
    // it has not checked, and a failed allocation aborts the process (see `bounds`).
    if let Err(e) = crate::bounds::check_request(api_key, version, &frame) {
        warn("malformed request: ", e.to_string());
        return Err(Rejected::Close);
    }
    // The crate's decoders return errors on short input; catch_unwind is a second line of
    // defence so that no malformed frame can panic the connection task with a cryptic message.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let header = decode_request_header_from_buffer(&mut frame)?;
        let body = RequestKind::decode(api_key, &mut frame, version)?;
        Ok::<_, anyhow::Error>((header, body))
    }));
    match decoded {
        Ok(Ok((header, body))) => Ok(Request {
            header,
            api_key,
            body,
            peer,
        }),
        Ok(Err(e)) => {
            warn("malformed request: ", format!("{e:#}"));
            Err(Rejected::Close)
        }
        Err(_) => {
            warn("request could not be decoded", String::new());
            Err(Rejected::Close)
        }
    }
}

/// Runs a request's handler and encodes its response. `queued` is the request's
/// `queued.max.requests` slot, given back as soon as the handler first parks (waits for
/// replication, a long poll, a rebalance) or finishes, as a Kafka request leaves the request
/// queue when a handler thread takes it; `memory` is its frame's pool reservation, held until
/// the response is ready.
async fn respond(
    ctx: Arc<Context>,
    request: Request,
    turn: Turn,
    queued: OwnedSemaphorePermit,
    memory: Option<OwnedSemaphorePermit>,
    unwritten: Arc<AtomicUsize>,
) -> Outcome {
    let api_key = request.api_key;
    let version = request.header.request_api_version;
    let correlation_id = request.header.correlation_id;
    let peer = request.peer;
    let mut handler = std::pin::pin!(handlers::handle(ctx, request, turn));
    let mut queued = Some(queued);
    let result = futures::future::poll_fn(|cx| {
        let poll = handler.as_mut().poll(cx);
        queued.take();
        poll
    })
    .await;
    let outcome = match result {
        Ok(Some(response)) => {
            match encode_response(api_key, version, correlation_id, &response, peer) {
                Some(bytes) => {
                    unwritten.fetch_add(bytes.len(), Ordering::AcqRel);
                    Outcome::Send(bytes)
                }
                None => Outcome::Close,
            }
        }
        Ok(None) => Outcome::Nothing,
        Err(handlers::CloseConnection) => Outcome::Close,
    };
    drop(memory);
    outcome
}

/// Size prefix, response header, body.
pub(crate) fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &ResponseKind,
    peer: SocketAddr,
) -> Option<Bytes> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api_key.response_header_version(version);
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    let encoded = header
        .encode(&mut buf, header_version)
        .and_then(|_| response.encode(&mut buf, version));
    if let Err(e) = encoded {
        tracing::error!(%peer, api = ?api_key, version, error = %e, "cannot encode response; closing connection");
        return None;
    }
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Some(buf.freeze())
}
