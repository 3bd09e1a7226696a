//! One TCP connection to one broker: framing, headers, correlation ids, version negotiation.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{
    encode_request_header_into_buffer, Decodable, HeaderVersion, Request, StrBytes, VersionRange,
};
use kafka_protocol::ResponseError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Error, Result};

/// Highest ApiVersions version we send first; we fall back to v0 if the broker rejects it.
const API_VERSIONS_VERSION: i16 = 3;

/// Settings shared by every connection a client opens.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The client id sent in every request header.
    pub client_id: String,
    /// How long to wait for a TCP connection to be established.
    pub connect_timeout: Duration,
    /// How long to wait for any request to be written and its response read. Fetch requests
    /// get their `max_wait_ms` added on top.
    pub request_timeout: Duration,
    /// Responses larger than this are rejected (protects against garbage size prefixes).
    pub max_response_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            client_id: "runnel-client".to_owned(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_response_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Encodes a complete request frame: 4-byte big-endian size, request header (v1 or v2 as the
/// API key and version require), then the request body at `header.request_api_version`.
pub fn encode_request_frame<R: Request>(header: &RequestHeader, request: &R) -> Result<BytesMut> {
    let version = header.request_api_version;
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0); // size placeholder
    encode_request_header_into_buffer(&mut buf, header)
        .map_err(|e| Error::protocol("", format!("cannot encode request header: {e:#}")))?;
    request.encode(&mut buf, version).map_err(|e| {
        Error::protocol(
            "",
            format!("cannot encode {} v{version}: {e:#}", api_name(R::KEY)),
        )
    })?;
    let size = buf.len() - 4;
    let size = i32::try_from(size)
        .map_err(|_| Error::protocol("", format!("request too large ({size} bytes)")))?;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf)
}

/// Decodes a response frame body (without the size prefix): the response header for
/// `R::Response` at `version`, then the response itself. Returns the correlation id and the
/// response.
pub fn decode_response_frame<R: Request>(
    mut body: Bytes,
    version: i16,
) -> Result<(i32, R::Response)> {
    let header_version = <R::Response as HeaderVersion>::header_version(version);
    let header = ResponseHeader::decode(&mut body, header_version)
        .map_err(|e| Error::protocol("", format!("cannot decode response header: {e:#}")))?;
    let response = <R::Response as Decodable>::decode(&mut body, version).map_err(|e| {
        Error::protocol(
            "",
            format!(
                "cannot decode {} v{version} response: {e:#}",
                api_name(R::KEY)
            ),
        )
    })?;
    Ok((header.correlation_id, response))
}

fn api_name(key: i16) -> String {
    match ApiKey::try_from(key) {
        Ok(k) => format!("{k:?}"),
        Err(()) => format!("api key {key}"),
    }
}

/// A connection to one broker.
///
/// After any network error or timeout the connection is marked broken (the stream position is
/// unknown) and every further call fails; open a new one.
#[derive(Debug)]
pub struct Connection {
    addr: String,
    stream: TcpStream,
    config: ClientConfig,
    client_id: StrBytes,
    next_correlation_id: i32,
    api_versions: BTreeMap<i16, VersionRange>,
    broken: bool,
}

impl Connection {
    /// Connects to `addr` (`host:port`) and negotiates API versions.
    pub async fn connect(addr: &str, config: &ClientConfig) -> Result<Self> {
        let stream =
            match tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(source)) => {
                    return Err(Error::Connect {
                        addr: addr.to_owned(),
                        source,
                    })
                }
                Err(_) => {
                    return Err(Error::Timeout {
                        addr: addr.to_owned(),
                        operation: "connecting to".to_owned(),
                        timeout: config.connect_timeout,
                    })
                }
            };
        let _ = stream.set_nodelay(true);
        let mut conn = Connection {
            addr: addr.to_owned(),
            stream,
            config: config.clone(),
            client_id: StrBytes::from_string(config.client_id.clone()),
            next_correlation_id: 1,
            api_versions: BTreeMap::new(),
            broken: false,
        };
        conn.negotiate_api_versions().await?;
        Ok(conn)
    }

    /// The `host:port` this connection was opened to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether a previous error left this connection unusable.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// The version ranges the broker advertised, by API key.
    pub fn api_versions(&self) -> &BTreeMap<i16, VersionRange> {
        &self.api_versions
    }

    /// The version range the broker advertised for `key`, if it supports the API at all.
    pub fn broker_versions(&self, key: ApiKey) -> Option<VersionRange> {
        self.api_versions.get(&(key as i16)).copied()
    }

    /// The highest version of `R` that both this client (up to `max_ours`) and the broker
    /// support.
    pub fn negotiate<R: Request>(&self, max_ours: i16) -> Result<i16> {
        let ours = VersionRange {
            min: R::VERSIONS.min,
            max: max_ours.min(R::VERSIONS.max),
        };
        let theirs = self.api_versions.get(&R::KEY).copied();
        let unsupported = || Error::UnsupportedVersion {
            addr: self.addr.clone(),
            api: ApiKey::try_from(R::KEY).unwrap_or(ApiKey::ApiVersions),
            ours,
            theirs,
        };
        let Some(theirs_range) = theirs else {
            return Err(unsupported());
        };
        let common = ours.intersect(&theirs_range);
        if common.is_empty() {
            return Err(unsupported());
        }
        Ok(common.max)
    }

    /// Sends `request` at the highest version both sides support (capped at `max_ours`) and
    /// waits for its response.
    pub async fn send<R: Request>(&mut self, request: R, max_ours: i16) -> Result<R::Response> {
        let version = self.negotiate::<R>(max_ours)?;
        self.send_versioned(&request, version).await
    }

    /// Sends `request` at exactly `version` and waits for its response.
    pub async fn send_versioned<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response> {
        self.send_versioned_with_extra_wait(request, version, Duration::ZERO)
            .await
    }

    /// Like [`Connection::send_versioned`], allowing `extra` on top of the request timeout
    /// (for requests the broker may legitimately hold, like Fetch with `max_wait_ms`).
    pub async fn send_versioned_with_extra_wait<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        extra: Duration,
    ) -> Result<R::Response> {
        let body = self.round_trip(request, version, extra).await?;
        self.decode::<R>(body, version)
    }

    /// Decodes a response frame; one that does not decode breaks the connection.
    fn decode<R: Request>(&mut self, body: Bytes, version: i16) -> Result<R::Response> {
        match decode_response_frame::<R>(body, version) {
            Ok((_, response)) => Ok(response),
            Err(e) => {
                self.broken = true;
                Err(self.attach_addr(e))
            }
        }
    }

    /// Sends a request for which the broker sends no response (Produce with `acks = 0`).
    pub async fn send_without_response<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<()> {
        let (frame, _) = self.frame(request, version)?;
        let timeout = self.config.request_timeout;
        let stream = &mut self.stream;
        let result = tokio::time::timeout(timeout, async {
            stream.write_all(&frame).await?;
            stream.flush().await
        })
        .await;
        self.finish_io(result, timeout, format!("sending {} to", api_name(R::KEY)))
    }

    /// Writes `request` at `version` without waiting for its response; returns its
    /// correlation id. Brokers answer the requests of one connection in the order they were
    /// written, so a caller may write several and then read the answers with
    /// [`Connection::read_response`] in the same order (pipelining, as Kafka's
    /// `max.in.flight.requests.per.connection`).
    pub async fn write_request<R: Request>(&mut self, request: &R, version: i16) -> Result<i32> {
        let (frame, correlation_id) = self.frame(request, version)?;
        let timeout = self.config.request_timeout;
        let stream = &mut self.stream;
        let result = tokio::time::timeout(timeout, async {
            stream.write_all(&frame).await?;
            stream.flush().await
        })
        .await;
        self.finish_io(result, timeout, format!("sending {} to", api_name(R::KEY)))?;
        Ok(correlation_id)
    }

    /// Reads the response to the request written with `correlation_id` at `version`, which
    /// must be the oldest one not yet read.
    pub async fn read_response<R: Request>(
        &mut self,
        correlation_id: i32,
        version: i16,
    ) -> Result<R::Response> {
        let operation = format!("waiting for a {} response from", api_name(R::KEY));
        let body = self
            .read_frame(correlation_id, self.config.request_timeout, operation)
            .await?;
        self.decode::<R>(body, version)
    }

    /// Reads one response frame and checks it answers `correlation_id`.
    async fn read_frame(
        &mut self,
        correlation_id: i32,
        timeout: Duration,
        operation: String,
    ) -> Result<Bytes> {
        self.ensure_usable()?;
        let max = self.config.max_response_bytes;
        let stream = &mut self.stream;
        let result = tokio::time::timeout(timeout, read_sized(stream, max)).await;
        let body = self.finish_io(result, timeout, operation)?;
        self.check_answers(body, correlation_id)
    }

    /// Refuses a connection an earlier error left in an unknown state.
    fn ensure_usable(&self) -> Result<()> {
        if !self.broken {
            return Ok(());
        }
        Err(Error::Io {
            addr: self.addr.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "connection was closed after an earlier error",
            ),
        })
    }

    /// Checks that a response frame's header answers `correlation_id`; a frame that does not
    /// breaks the connection (the responses that follow would be misattributed).
    fn check_answers(&mut self, body: Bytes, correlation_id: i32) -> Result<Bytes> {
        if body.len() < 4 {
            self.broken = true;
            return Err(Error::protocol(
                &self.addr,
                "response shorter than its header",
            ));
        }
        let got = (&body[..4]).get_i32();
        if got != correlation_id {
            self.broken = true;
            return Err(Error::protocol(
                &self.addr,
                format!("response correlation id {got} does not match request {correlation_id}"),
            ));
        }
        Ok(body)
    }

    fn frame<R: Request>(&mut self, request: &R, version: i16) -> Result<(BytesMut, i32)> {
        self.ensure_usable()?;
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1).max(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let frame = encode_request_frame(&header, request).map_err(|e| self.attach_addr(e))?;
        Ok((frame, correlation_id))
    }

    /// Writes the request and reads the matching response frame; returns the frame body
    /// (response header + response).
    async fn round_trip<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        extra: Duration,
    ) -> Result<Bytes> {
        let (frame, correlation_id) = self.frame(request, version)?;
        let max = self.config.max_response_bytes;
        let timeout = self.config.request_timeout + extra;
        let operation = format!("waiting for a {} response from", api_name(R::KEY));
        let stream = &mut self.stream;
        let result = tokio::time::timeout(timeout, async {
            stream.write_all(&frame).await?;
            stream.flush().await?;
            read_sized(stream, max).await
        })
        .await;
        let body = self.finish_io(result, timeout, operation)?;
        self.check_answers(body, correlation_id)
    }

    fn finish_io<T>(
        &mut self,
        result: std::result::Result<std::io::Result<T>, tokio::time::error::Elapsed>,
        timeout: Duration,
        operation: String,
    ) -> Result<T> {
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => {
                self.broken = true;
                let source = if source.kind() == std::io::ErrorKind::UnexpectedEof {
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the broker closed the connection",
                    )
                } else {
                    source
                };
                Err(Error::Io {
                    addr: self.addr.clone(),
                    source,
                })
            }
            Err(_) => {
                self.broken = true;
                Err(Error::Timeout {
                    addr: self.addr.clone(),
                    operation,
                    timeout,
                })
            }
        }
    }

    fn attach_addr(&self, e: Error) -> Error {
        match e {
            Error::Protocol { addr, message } if addr.is_empty() => Error::Protocol {
                addr: self.addr.clone(),
                message,
            },
            other => other,
        }
    }

    async fn negotiate_api_versions(&mut self) -> Result<()> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("runnel-client"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let body = self
            .round_trip(&request, API_VERSIONS_VERSION, Duration::ZERO)
            .await?;
        // Skip the response header (always v0 for ApiVersions: just the correlation id) and
        // peek at the error code, which every ApiVersionsResponse version starts with. A broker
        // that does not support our version answers UNSUPPORTED_VERSION in the v0 format.
        let error_code = if body.len() >= 6 {
            (&body[4..6]).get_i16()
        } else {
            0
        };
        let response = if error_code == ResponseError::UnsupportedVersion.code() {
            tracing::debug!(addr = %self.addr, "broker rejected ApiVersions v3, retrying with v0");
            self.send_versioned(&ApiVersionsRequest::default(), 0)
                .await?
        } else {
            match decode_response_frame::<ApiVersionsRequest>(body, API_VERSIONS_VERSION) {
                Ok((_, r)) => r,
                Err(e) => {
                    self.broken = true;
                    return Err(self.attach_addr(e));
                }
            }
        };
        self.store_api_versions(response)
    }

    fn store_api_versions(&mut self, response: ApiVersionsResponse) -> Result<()> {
        if let Some(e) = Error::from_code(response.error_code, None, None, None) {
            return Err(match e {
                Error::Kafka { error, .. } => Error::protocol(
                    &self.addr,
                    format!("ApiVersions failed: {}", crate::error::error_name(error)),
                ),
                other => other,
            });
        }
        self.api_versions = response
            .api_keys
            .iter()
            .map(|k| {
                (
                    k.api_key,
                    VersionRange {
                        min: k.min_version,
                        max: k.max_version,
                    },
                )
            })
            .collect();
        tracing::debug!(addr = %self.addr, apis = self.api_versions.len(), "connected");
        Ok(())
    }
}

/// Reads one size-prefixed frame of at most `max` bytes; the size is checked before anything
/// is allocated.
async fn read_sized(stream: &mut TcpStream, max: usize) -> std::io::Result<Bytes> {
    let size = stream.read_i32().await?;
    if size < 0 || size as usize > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("invalid response size {size}"),
        ));
    }
    let mut body = vec![0u8; size as usize];
    stream.read_exact(&mut body).await?;
    Ok(Bytes::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{
        fetch_request::{FetchPartition, FetchTopic},
        metadata_request::MetadataRequestTopic,
        produce_request::{PartitionProduceData, TopicProduceData},
        ApiVersionsResponse, FetchRequest, MetadataRequest, MetadataResponse, ProduceRequest,
        TopicName,
    };
    use kafka_protocol::protocol::{decode_request_header_from_buffer, Encodable};

    fn round_trip_request<R: Request + PartialEq + std::fmt::Debug>(request: R, version: i16) {
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(42)
            .with_client_id(Some(StrBytes::from_static_str("test-client")));
        let frame = encode_request_frame(&header, &request).unwrap();
        let mut bytes = frame.freeze();
        let size = bytes.get_i32();
        assert_eq!(size as usize, bytes.len(), "size prefix");
        let decoded_header = decode_request_header_from_buffer(&mut bytes).unwrap();
        assert_eq!(decoded_header, header);
        let decoded = R::decode(&mut bytes, version).unwrap();
        assert_eq!(decoded, request, "{} v{version}", api_name(R::KEY));
        assert!(!bytes.has_remaining(), "trailing bytes");
    }

    #[test]
    fn api_versions_request_round_trips() {
        round_trip_request(ApiVersionsRequest::default(), 0);
        round_trip_request(
            ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("runnel-client"))
                .with_client_software_version(StrBytes::from_static_str("0.1.0")),
            3,
        );
    }

    #[test]
    fn metadata_request_round_trips_with_v1_and_v2_headers() {
        for version in [1, 4, 8, 9, 12] {
            let request = MetadataRequest::default()
                .with_topics(Some(vec![MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_static_str("orders"))))]))
                .with_allow_auto_topic_creation(version < 4);
            round_trip_request(request, version);
        }
    }

    #[test]
    fn produce_and_fetch_requests_round_trip() {
        let records = crate::records::encode_record_batch(
            &[crate::ProducerRecord::key_value("k", "v")],
            kafka_protocol::records::Compression::None,
        )
        .unwrap();
        for version in [3, 8, 9, 12] {
            let request = ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(30_000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("t")))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records.clone()))])]);
            round_trip_request(request, version);
        }
        let id = uuid::Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0);
        for version in [4, 11, 12, 13, 17] {
            let mut topic = FetchTopic::default().with_partitions(vec![FetchPartition::default()
                .with_partition(1)
                .with_fetch_offset(17)
                .with_partition_max_bytes(1 << 20)]);
            if version >= 13 {
                topic = topic.with_topic_id(id);
            } else {
                topic = topic.with_topic(TopicName(StrBytes::from_static_str("t")));
            }
            let request = FetchRequest::default()
                .with_max_wait_ms(500)
                .with_min_bytes(1)
                .with_topics(vec![topic]);
            round_trip_request(request, version);
        }
    }

    fn encode_response_body<R: Request>(
        correlation_id: i32,
        response: &R::Response,
        version: i16,
    ) -> Bytes {
        let mut buf = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(
                &mut buf,
                <R::Response as HeaderVersion>::header_version(version),
            )
            .unwrap();
        response.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn response_frames_decode() {
        let response = ApiVersionsResponse::default().with_api_keys(vec![
            kafka_protocol::messages::api_versions_response::ApiVersion::default()
                .with_api_key(ApiKey::Fetch as i16)
                .with_min_version(4)
                .with_max_version(17),
        ]);
        for version in [0, 3] {
            let body = encode_response_body::<ApiVersionsRequest>(7, &response, version);
            let (cid, decoded) =
                decode_response_frame::<ApiVersionsRequest>(body, version).unwrap();
            assert_eq!(cid, 7);
            assert_eq!(decoded.api_keys, response.api_keys);
        }
        // Metadata v9+ uses the flexible (v1) response header.
        let response = MetadataResponse::default().with_cluster_id(Some("c".into()));
        for version in [2, 8, 9, 12] {
            let body = encode_response_body::<MetadataRequest>(9, &response, version);
            let (cid, decoded) = decode_response_frame::<MetadataRequest>(body, version).unwrap();
            assert_eq!(cid, 9);
            assert_eq!(decoded, response);
        }
    }

    /// The fake brokers' side: one request frame, as its header and the rest.
    async fn read_request(
        sock: &mut TcpStream,
    ) -> (kafka_protocol::messages::RequestHeader, Bytes) {
        let size = sock.read_i32().await.unwrap();
        let mut body = vec![0u8; size as usize];
        sock.read_exact(&mut body).await.unwrap();
        let mut body = Bytes::from(body);
        let header = decode_request_header_from_buffer(&mut body).unwrap();
        (header, body)
    }

    async fn write_reply(sock: &mut TcpStream, reply: &[u8]) {
        sock.write_i32(reply.len() as i32).await.unwrap();
        sock.write_all(reply).await.unwrap();
    }

    /// A fake broker on a local socket: answers ApiVersions v3 with UNSUPPORTED_VERSION (in
    /// the v0 format, as Kafka does), then answers v0 properly; then serves one Metadata.
    #[tokio::test]
    async fn connect_falls_back_to_api_versions_v0_and_negotiates() {
        use tokio::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut seen_versions = Vec::new();
            for _ in 0..3 {
                let (header, mut body) = read_request(&mut sock).await;
                seen_versions.push((header.request_api_key, header.request_api_version));
                let reply = if header.request_api_key == ApiKey::ApiVersions as i16 {
                    let mut resp = ApiVersionsResponse::default().with_api_keys(vec![
                        kafka_protocol::messages::api_versions_response::ApiVersion::default()
                            .with_api_key(ApiKey::ApiVersions as i16)
                            .with_min_version(0)
                            .with_max_version(2),
                        kafka_protocol::messages::api_versions_response::ApiVersion::default()
                            .with_api_key(ApiKey::Metadata as i16)
                            .with_min_version(0)
                            .with_max_version(7),
                    ]);
                    if header.request_api_version > 2 {
                        resp = resp.with_error_code(ResponseError::UnsupportedVersion.code());
                    }
                    encode_response_body::<ApiVersionsRequest>(header.correlation_id, &resp, 0)
                } else {
                    let req =
                        MetadataRequest::decode(&mut body, header.request_api_version).unwrap();
                    assert!(req.topics.is_none());
                    let resp = MetadataResponse::default().with_controller_id(3.into());
                    encode_response_body::<MetadataRequest>(
                        header.correlation_id,
                        &resp,
                        header.request_api_version,
                    )
                };
                write_reply(&mut sock, &reply).await;
            }
            seen_versions
        });
        let mut conn = Connection::connect(&addr, &ClientConfig::default())
            .await
            .unwrap();
        assert_eq!(
            conn.broker_versions(ApiKey::Metadata),
            Some(VersionRange { min: 0, max: 7 })
        );
        assert!(conn.negotiate::<FetchRequest>(17).is_err());
        assert_eq!(conn.negotiate::<MetadataRequest>(12).unwrap(), 7);
        let resp = conn
            .send(MetadataRequest::default().with_topics(None), 12)
            .await
            .unwrap();
        assert_eq!(resp.controller_id, 3);
        let seen = server.await.unwrap();
        assert_eq!(
            seen,
            vec![
                (ApiKey::ApiVersions as i16, 3),
                (ApiKey::ApiVersions as i16, 0),
                (ApiKey::Metadata as i16, 7)
            ]
        );
    }

    /// Requests written back to back are answered in order; reading them in the order
    /// written matches every correlation id.
    #[tokio::test]
    async fn pipelined_requests_are_read_back_in_order() {
        use tokio::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut metadata_ids = Vec::new();
            for _ in 0..4 {
                let (header, _) = read_request(&mut sock).await;
                let reply = if header.request_api_key == ApiKey::ApiVersions as i16 {
                    let resp = ApiVersionsResponse::default().with_api_keys(vec![
                        kafka_protocol::messages::api_versions_response::ApiVersion::default()
                            .with_api_key(ApiKey::Metadata as i16)
                            .with_min_version(0)
                            .with_max_version(12),
                    ]);
                    encode_response_body::<ApiVersionsRequest>(header.correlation_id, &resp, 3)
                } else {
                    // Answer nothing until all three are in: they are truly in flight.
                    metadata_ids.push(header.correlation_id);
                    continue;
                };
                write_reply(&mut sock, &reply).await;
            }
            for (i, id) in metadata_ids.iter().enumerate() {
                let resp = MetadataResponse::default().with_controller_id((i as i32).into());
                let reply = encode_response_body::<MetadataRequest>(*id, &resp, 12);
                write_reply(&mut sock, &reply).await;
            }
            metadata_ids
        });
        let mut conn = Connection::connect(&addr, &ClientConfig::default())
            .await
            .unwrap();
        let request = MetadataRequest::default().with_topics(None);
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(conn.write_request(&request, 12).await.unwrap());
        }
        for (i, id) in ids.iter().enumerate() {
            let resp = conn
                .read_response::<MetadataRequest>(*id, 12)
                .await
                .unwrap();
            assert_eq!(resp.controller_id.0, i as i32);
        }
        assert_eq!(server.await.unwrap(), ids);
        // Nothing is in flight any more: reading again times out, and breaks the connection.
        let config = ClientConfig {
            request_timeout: Duration::from_millis(100),
            ..ClientConfig::default()
        };
        conn.config = config;
        assert!(conn.read_response::<MetadataRequest>(99, 12).await.is_err());
        assert!(conn.is_broken());
    }

    #[tokio::test]
    async fn connect_refused_is_a_connect_error() {
        // Bind then drop to get a port that is (very likely) closed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = Connection::connect(&format!("127.0.0.1:{port}"), &ClientConfig::default())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn silent_broker_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let _server = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(sock);
        });
        let config = ClientConfig {
            request_timeout: Duration::from_millis(200),
            ..ClientConfig::default()
        };
        let err = Connection::connect(&addr, &config).await.unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    }
}
