//! The scenarios: producer throughput, consumer throughput and produce latency, all driven by
//! librdkafka (BaseProducer / BaseConsumer) from the calling thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

/// How long the producer may take, after its last send, to get every delivery report back.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// At most this many error texts are kept per scenario (all are counted).
const MAX_KEPT: usize = 8;
const MIB: f64 = 1024.0 * 1024.0;

/// What one scenario measured. Rates are over `seconds`; MiB counts record values only.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Outcome {
    pub scenario: String,
    pub topic: String,
    pub value_bytes: usize,
    pub acks: String,
    /// Replication factor of the topic (1 on the single node).
    pub replication_factor: u16,
    /// Records the scenario was allowed to send or read.
    pub target_records: u64,
    /// Records acknowledged without error (producer) or read (consumer).
    pub records: u64,
    pub seconds: f64,
    pub records_per_sec: f64,
    pub mib_per_sec: f64,
    /// True when the time limit, not the record count, ended the scenario.
    pub hit_time_limit: bool,
    /// Delivery reports with an error, send() calls refused for other reasons than a full
    /// queue, messages the producer never got a report for, or consumer errors / gaps.
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// librdkafka's own warnings and errors (log and error callbacks); informative only.
    pub client_warnings: u64,
    pub client_warning_samples: Vec<String>,
    /// Per-record delivery latency (latency scenario only), milliseconds.
    pub latency_ms: Option<Latency>,
    /// The node's RSS after the scenario and the CPU (user + system) it used during the
    /// scenario, when the bench started the node.
    pub node_rss_mib: Option<f64>,
    pub node_cpu_seconds: Option<f64>,
    pub note: String,
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Latency {
    pub samples: usize,
    pub mean: f64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// Context shared by the bench's producers and consumers: counts delivery results and
/// collects librdkafka's warnings.
struct Ctx {
    origin: Instant,
    record_latency: bool,
    delivered: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<Vec<String>>,
    /// Delivered offsets' maximum per partition, to learn the topic's end.
    latencies_us: Mutex<Vec<u64>>,
    client_warnings: AtomicU64,
    warning_samples: Mutex<Vec<String>>,
}

impl Ctx {
    fn new(record_latency: bool) -> Ctx {
        Ctx {
            origin: Instant::now(),
            record_latency,
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            errors: Mutex::new(Vec::new()),
            latencies_us: Mutex::new(Vec::new()),
            client_warnings: AtomicU64::new(0),
            warning_samples: Mutex::new(Vec::new()),
        }
    }

    fn note_error(&self, text: String) {
        let mut v = self.errors.lock().unwrap();
        if v.len() < MAX_KEPT {
            v.push(text);
        }
    }

    fn note_warning(&self, text: String) {
        self.client_warnings.fetch_add(1, Ordering::Relaxed);
        let mut v = self.warning_samples.lock().unwrap();
        if v.len() < MAX_KEPT {
            v.push(text);
        }
    }
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if debug_contexts().is_some() {
            eprintln!(
                "[{:>9.3}s] librdkafka {level:?} {fac}: {log_message}",
                self.origin.elapsed().as_secs_f64()
            );
        }
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            self.note_warning(format!("{level:?} {fac}: {log_message}"));
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.note_warning(format!("error callback: {error}: {reason}"));
    }
}

impl ProducerContext for Ctx {
    /// Nanoseconds since `origin` at send time (latency scenario), else 0.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_at_ns: usize) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                if self.record_latency {
                    let now_ns = self.origin.elapsed().as_nanos() as u64;
                    let us = now_ns.saturating_sub(sent_at_ns as u64) / 1000;
                    self.latencies_us.lock().unwrap().push(us);
                }
            }
            Err((e, msg)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.note_error(format!(
                    "delivery failed (topic {}, partition {}): {e}",
                    msg.topic(),
                    msg.partition()
                ));
            }
        }
    }
}

impl ConsumerContext for Ctx {}

/// librdkafka debug contexts (`--rdkafka-debug`), applied to every client; its log lines then
/// go to stderr.
static DEBUG: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

pub fn set_debug_contexts(contexts: Option<String>) {
    let _ = DEBUG.set(contexts);
}

fn debug_contexts() -> Option<&'static str> {
    DEBUG.get().and_then(|d| d.as_deref())
}

fn base_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("client.id", "runnel-bench");
    // Without a `log` logger, rdkafka would pass on errors only; warnings are counted too.
    c.set_log_level(RDKafkaLogLevel::Warning);
    if let Some(d) = debug_contexts() {
        c.set("debug", d).set_log_level(RDKafkaLogLevel::Debug);
    }
    c
}

/// Settings of one producer scenario.
pub struct ProduceSpec<'a> {
    pub scenario: String,
    pub bootstrap: &'a str,
    pub topic: String,
    pub value_bytes: usize,
    pub acks: &'static str,
    pub replication_factor: u16,
    /// `enable.idempotence`: the broker then checks every batch's producer sequence.
    pub idempotent: bool,
    pub records: u64,
    pub time_limit: Duration,
}

fn producer_config(bootstrap: &str, acks: &str, linger_ms: u32) -> ClientConfig {
    let mut c = base_config(bootstrap);
    c.set("acks", acks)
        .set("linger.ms", linger_ms.to_string())
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        // Caps what is queued client-side when the time limit stops sending, so the drain that
        // follows stays short.
        .set("queue.buffering.max.kbytes", "131072")
        .set("compression.type", "none")
        .set("enable.idempotence", "false")
        .set("message.timeout.ms", "60000")
        .set("request.timeout.ms", "30000");
    c
}

/// Deterministic, incompressible-looking value bytes.
fn payload(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x & 0xff) as u8
        })
        .collect()
}

/// Asks for the topic's metadata, which makes the broker auto-create it, so that creation
/// is not timed. Returns the partition count.
fn ensure_topic<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let md = client
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .with_context(|| format!("metadata for topic {topic}"))?;
        if let Some(t) = md.topics().iter().find(|t| t.name() == topic) {
            if t.error().is_none() && !t.partitions().is_empty() {
                return Ok(t.partitions().len());
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("topic {topic} did not appear in metadata within 15s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many live brokers the cluster's Metadata lists.
pub fn live_brokers(bootstrap: &str) -> Result<usize> {
    let producer: BaseProducer<Ctx> = base_config(bootstrap)
        .create_with_context(Ctx::new(false))
        .context("cannot create a metadata client")?;
    let md = producer
        .client()
        .fetch_metadata(None, Duration::from_secs(5))
        .context("metadata")?;
    Ok(md.brokers().len())
}

/// Polls until every queued message has its delivery report (or the timeout passes).
/// Returns the number of messages still without a report.
fn drain(producer: &BaseProducer<Ctx>, timeout: Duration) -> i32 {
    let deadline = Instant::now() + timeout;
    loop {
        producer.poll(Duration::from_millis(1));
        let left = producer.in_flight_count();
        if left == 0 || Instant::now() > deadline {
            return left;
        }
    }
}

fn finish_producer(out: &mut Outcome, ctx: &Ctx, undelivered: i32, send_errors: u64) {
    out.records = ctx.delivered.load(Ordering::Relaxed);
    let failed = ctx.failed.load(Ordering::Relaxed);
    out.errors = failed + send_errors + undelivered.max(0) as u64;
    out.error_samples
        .extend(ctx.errors.lock().unwrap().iter().cloned());
    if undelivered > 0 {
        out.error_samples.push(format!(
            "{undelivered} messages still had no delivery report {}s after the last send",
            DRAIN_TIMEOUT.as_secs()
        ));
    }
    out.client_warnings = ctx.client_warnings.load(Ordering::Relaxed);
    out.client_warning_samples = ctx.warning_samples.lock().unwrap().clone();
    if out.seconds > 0.0 {
        out.records_per_sec = out.records as f64 / out.seconds;
        out.mib_per_sec = out.records as f64 * out.value_bytes as f64 / MIB / out.seconds;
    }
}

/// Producer throughput: one BaseProducer sends as fast as librdkafka accepts, until
/// `records` were sent or `time_limit` passed; the clock stops when the last delivery
/// report is in.
pub fn produce_throughput(spec: &ProduceSpec<'_>) -> Result<Outcome> {
    let mut config = producer_config(spec.bootstrap, spec.acks, 5);
    if spec.idempotent {
        config.set("enable.idempotence", "true");
    }
    let producer: BaseProducer<Ctx> = config
        .create_with_context(Ctx::new(false))
        .context("cannot create the producer")?;
    let partitions = ensure_topic(producer.client(), &spec.topic)?;
    let value = payload(spec.value_bytes);
    let mut out = Outcome {
        scenario: spec.scenario.clone(),
        topic: spec.topic.clone(),
        value_bytes: spec.value_bytes,
        acks: spec.acks.to_string(),
        replication_factor: spec.replication_factor,
        target_records: spec.records,
        note: format!("{partitions} partition(s), linger.ms=5"),
        ..Default::default()
    };

    let start = Instant::now();
    let deadline = start + spec.time_limit;
    let mut sent: u64 = 0;
    let mut send_errors: u64 = 0;
    while sent < spec.records {
        if sent & 1023 == 0 {
            if Instant::now() >= deadline {
                out.hit_time_limit = true;
                break;
            }
            producer.poll(Duration::ZERO);
        }
        match producer
            .send(BaseRecord::<(), [u8], usize>::with_opaque_to(&spec.topic, 0).payload(&value[..]))
        {
            Ok(()) => sent += 1,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(1));
                if Instant::now() >= deadline {
                    out.hit_time_limit = true;
                    break;
                }
            }
            Err((e, _)) => {
                send_errors += 1;
                producer
                    .context()
                    .note_error(format!("send() refused: {e}"));
                if send_errors >= 1000 {
                    break;
                }
            }
        }
    }
    let undelivered = drain(&producer, DRAIN_TIMEOUT);
    out.seconds = start.elapsed().as_secs_f64();
    finish_producer(&mut out, producer.context(), undelivered, send_errors);
    Ok(out)
}

/// Produce latency: `rate` records/s, paced, acks=all, linger.ms=0, for `seconds`; latency is
/// from send() to the delivery report.
pub fn produce_latency(
    bootstrap: &str,
    topic: &str,
    value_bytes: usize,
    rate: u64,
    seconds: u64,
) -> Result<Outcome> {
    let producer: BaseProducer<Ctx> = producer_config(bootstrap, "all", 0)
        .create_with_context(Ctx::new(true))
        .context("cannot create the producer")?;
    let partitions = ensure_topic(producer.client(), topic)?;
    let value = payload(value_bytes);
    let records = rate * seconds;
    let mut out = Outcome {
        scenario: format!("latency {value_bytes} B, {rate}/s, acks=all"),
        topic: topic.to_string(),
        value_bytes,
        acks: "all".into(),
        replication_factor: 1,
        target_records: records,
        note: format!("{partitions} partition(s), linger.ms=0, paced"),
        ..Default::default()
    };
    // Warm the connection so that the first records do not pay for connecting.
    let _ =
        producer.send(BaseRecord::<(), [u8], usize>::with_opaque_to(topic, 0).payload(&value[..]));
    drain(&producer, Duration::from_secs(10));
    producer.context().latencies_us.lock().unwrap().clear();
    producer.context().delivered.store(0, Ordering::Relaxed);

    let ctx = producer.context();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    // The whole run, drain included, is bounded by twice the nominal time.
    let deadline = start + Duration::from_secs(seconds * 2 + 5);
    let mut send_errors = 0u64;
    let mut sent = 0u64;
    while sent < records {
        let due = start + interval.mul_f64(sent as f64);
        let now = Instant::now();
        if now > deadline {
            out.hit_time_limit = true;
            break;
        }
        if now < due {
            // Serve delivery reports while waiting for the next send time.
            producer.poll(due - now);
            continue;
        }
        let sent_at = ctx.origin.elapsed().as_nanos() as usize;
        match producer
            .send(BaseRecord::<(), [u8], usize>::with_opaque_to(topic, sent_at).payload(&value[..]))
        {
            Ok(()) => sent += 1,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(1));
            }
            Err((e, _)) => {
                send_errors += 1;
                ctx.note_error(format!("send() refused: {e}"));
                sent += 1;
            }
        }
    }
    let undelivered = drain(&producer, DRAIN_TIMEOUT);
    out.seconds = start.elapsed().as_secs_f64();
    finish_producer(&mut out, ctx, undelivered, send_errors);
    let mut lat = std::mem::take(&mut *ctx.latencies_us.lock().unwrap());
    lat.sort_unstable();
    if !lat.is_empty() {
        let q = |p: f64| -> f64 {
            let i = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
            lat[i] as f64 / 1000.0
        };
        out.latency_ms = Some(Latency {
            samples: lat.len(),
            mean: lat.iter().sum::<u64>() as f64 / lat.len() as f64 / 1000.0,
            p50: q(0.50),
            p99: q(0.99),
            p999: q(0.999),
            max: *lat.last().unwrap() as f64 / 1000.0,
        });
    }
    Ok(out)
}

/// Consumer throughput: one BaseConsumer assigned every partition of `topic` from the
/// beginning reads up to the high watermarks seen at start (or until `time_limit`). Checks
/// that offsets are contiguous and values have the expected size.
pub fn consume_throughput(
    scenario: &str,
    bootstrap: &str,
    topic: &str,
    value_bytes: usize,
    group_id: &str,
    time_limit: Duration,
) -> Result<Outcome> {
    let mut cfg = base_config(bootstrap);
    cfg.set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        // librdkafka stops fetching once 100,000 messages are queued client-side and then
        // waits fetch.queue.backoff.ms (default 1000 ms): with 100-byte records that capped
        // reads at ~230k records/s, with the broker idle. Keep more queued, back off briefly.
        .set("queued.min.messages", "1000000")
        .set("fetch.queue.backoff.ms", "10")
        // Required by librdkafka for assign(); no group API is called (no subscribe, no commit).
        .set("group.id", group_id);
    let consumer: BaseConsumer<Ctx> = cfg
        .create_with_context(Ctx::new(false))
        .context("cannot create the consumer")?;
    let partitions = ensure_topic(consumer.client(), topic)?;
    let mut tpl = TopicPartitionList::new();
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut expected: u64 = 0;
    for p in 0..partitions as i32 {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .with_context(|| format!("watermarks of {topic}/{p}"))?;
        expected += (high - low).max(0) as u64;
        ends.insert(p, high);
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    let mut out = Outcome {
        scenario: scenario.to_string(),
        topic: topic.to_string(),
        value_bytes,
        acks: "-".into(),
        replication_factor: 1,
        target_records: expected,
        note: format!("{partitions} partition(s), assign() from the beginning"),
        ..Default::default()
    };
    consumer.assign(&tpl).context("assign()")?;

    let ctx = consumer.context();
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut read: u64 = 0;
    let mut bytes: u64 = 0;
    let mut errors: u64 = 0;
    let start = Instant::now();
    let deadline = start + time_limit;
    let mut last = start;
    while read < expected {
        if Instant::now() >= deadline {
            out.hit_time_limit = true;
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                let p = m.partition();
                let off = m.offset();
                let want = *next.entry(p).or_insert(off);
                if off != want {
                    errors += 1;
                    ctx.note_error(format!(
                        "partition {p}: expected offset {want}, got {off} ({})",
                        if off > want {
                            "gap"
                        } else {
                            "duplicate or rewind"
                        }
                    ));
                }
                next.insert(p, off + 1);
                let len = m.payload().map_or(0, |v| v.len());
                if len != value_bytes {
                    errors += 1;
                    ctx.note_error(format!(
                        "partition {p} offset {off}: value of {len} bytes, expected {value_bytes}"
                    ));
                }
                bytes += len as u64;
                read += 1;
                last = Instant::now();
            }
            Some(Err(e)) => {
                errors += 1;
                ctx.note_error(format!("consumer error: {e}"));
                if errors >= 1000 {
                    break;
                }
            }
        }
    }
    // Offsets that do not start at the log start are fine (retention); check the ends only.
    for (p, high) in &ends {
        if let Some(n) = next.get(p) {
            if !out.hit_time_limit && *n < *high {
                errors += 1;
                ctx.note_error(format!(
                    "partition {p}: stopped at {n}, high watermark {high}"
                ));
            }
        }
    }
    out.seconds = (last - start).as_secs_f64();
    out.records = read;
    out.errors = errors;
    out.error_samples = ctx.errors.lock().unwrap().clone();
    out.client_warnings = ctx.client_warnings.load(Ordering::Relaxed);
    out.client_warning_samples = ctx.warning_samples.lock().unwrap().clone();
    if out.seconds > 0.0 {
        out.records_per_sec = read as f64 / out.seconds;
        out.mib_per_sec = bytes as f64 / MIB / out.seconds;
    }
    Ok(out)
}
