//! One task per client connection: read frames, decode, dispatch, and write responses back in
//! request order while many requests are in flight.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, StreamExt};
use futures::FutureExt;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{decode_request_header_from_buffer, Encodable};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::frame::{raw_header, take_frame, RawHeader};
use crate::handlers;
use crate::Context;

/// Requests one connection may have in flight before the node stops reading from it. Bounds
/// the memory a single pipelining client can make the node hold.
const MAX_IN_FLIGHT_PER_CONNECTION: usize = 128;

/// A decoded request with what is needed to answer it.
pub(crate) struct Request {
    pub(crate) header: RequestHeader,
    pub(crate) api_key: ApiKey,
    pub(crate) body: RequestKind,
    pub(crate) peer: SocketAddr,
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
enum Rejected {
    /// Answer with these bytes (ApiVersions with an unsupported version).
    Answer(Bytes),
    /// Close the connection; the reason was logged.
    Close,
}

pub(crate) async fn run(
    socket: TcpStream,
    peer: SocketAddr,
    ctx: Arc<Context>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut reader, writer) = socket.into_split();
    let mut writer = BufWriter::new(writer);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut in_flight: InFlight = FuturesOrdered::new();
    let max_frame = ctx.broker.config().socket_request_max_bytes();
    let mut reading = true;
    tracing::debug!(%peer, "connection opened");

    loop {
        if !reading && in_flight.is_empty() {
            break;
        }
        tokio::select! {
            // Responses first, so a pipelining client cannot starve its own answers.
            biased;
            Some(outcome) = in_flight.next(), if !in_flight.is_empty() => {
                let mut next = Some(outcome);
                // Write out everything already done, then flush once.
                while let Some(outcome) = next.take() {
                    match outcome {
                        Outcome::Send(bytes) => {
                            if writer.write_all(&bytes).await.is_err() {
                                return;
                            }
                        }
                        Outcome::Nothing => {}
                        Outcome::Close => {
                            let _ = writer.flush().await;
                            return;
                        }
                    }
                    next = in_flight.next().now_or_never().flatten();
                }
                if writer.flush().await.is_err() {
                    break;
                }
            }
            read = reader.read_buf(&mut buf), if reading && in_flight.len() < MAX_IN_FLIGHT_PER_CONNECTION => {
                match read {
                    Ok(0) => {
                        if !buf.is_empty() {
                            tracing::warn!(%peer, bytes = buf.len(), "client closed the connection in the middle of a request frame");
                        }
                        reading = false;
                    }
                    Ok(_) => {
                        if !drain_frames(&mut buf, max_frame, peer, &ctx, &mut in_flight) {
                            reading = false;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "read failed");
                        reading = false;
                    }
                }
            }
            _ = shutdown.changed(), if reading => {
                // Stop taking requests; answer those already in flight, then close.
                reading = false;
            }
        }
    }
    let _ = writer.shutdown().await;
    tracing::debug!(%peer, "connection closed");
}

/// Turns every complete frame in `buf` into an in-flight request. Returns false when the
/// connection must be closed.
fn drain_frames(
    buf: &mut BytesMut,
    max_frame: usize,
    peer: SocketAddr,
    ctx: &Arc<Context>,
    in_flight: &mut InFlight,
) -> bool {
    loop {
        let frame = match take_frame(buf, max_frame) {
            Ok(Some(frame)) => frame,
            Ok(None) => return true,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection: bad request frame");
                return false;
            }
        };
        match decode(frame, peer) {
            Ok(request) => {
                let ctx = ctx.clone();
                in_flight.push_back(async move { respond(ctx, request).await }.boxed());
            }
            Err(Rejected::Answer(bytes)) => {
                in_flight.push_back(futures::future::ready(Outcome::Send(bytes)).boxed());
            }
            Err(Rejected::Close) => return false,
        }
    }
}

fn decode(mut frame: Bytes, peer: SocketAddr) -> Result<Request, Rejected> {
    let RawHeader {
        api_key: key,
        api_version: version,
        correlation_id,
    } = raw_header(&frame);
    let Ok(api_key) = ApiKey::try_from(key) else {
        tracing::warn!(%peer, api_key = key, correlation_id, "closing connection: unknown API key");
        return Err(Rejected::Close);
    };
    let Some(range) = handlers::supported_versions(api_key) else {
        tracing::warn!(%peer, api = ?api_key, version, "closing connection: API not supported by Runnel");
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
        tracing::warn!(%peer, api = ?api_key, version, supported = %format!("{}..={}", range.min, range.max),
            "closing connection: unsupported API version");
        return Err(Rejected::Close);
    }
    // Walk the frame against its schema first: kafka-protocol sizes allocations from counts
    // it has not checked, and a failed allocation aborts the process (see `bounds`).
    if let Err(e) = crate::bounds::check_request(api_key, version, &frame) {
        tracing::warn!(%peer, api = ?api_key, version, correlation_id, error = %e,
            "closing connection: malformed request");
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
            tracing::warn!(%peer, api = ?api_key, version, correlation_id, error = %e,
                "closing connection: malformed request");
            Err(Rejected::Close)
        }
        Err(_) => {
            tracing::warn!(%peer, api = ?api_key, version, correlation_id,
                "closing connection: request could not be decoded");
            Err(Rejected::Close)
        }
    }
}

async fn respond(ctx: Arc<Context>, request: Request) -> Outcome {
    let api_key = request.api_key;
    let version = request.header.request_api_version;
    let correlation_id = request.header.correlation_id;
    let peer = request.peer;
    match handlers::handle(ctx, request).await {
        Ok(Some(response)) => {
            match encode_response(api_key, version, correlation_id, &response, peer) {
                Some(bytes) => Outcome::Send(bytes),
                None => Outcome::Close,
            }
        }
        Ok(None) => Outcome::Nothing,
        Err(handlers::CloseConnection) => Outcome::Close,
    }
}

/// Size prefix, response header, body.
fn encode_response(
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
