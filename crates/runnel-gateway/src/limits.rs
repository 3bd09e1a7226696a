//! Node-wide limits of the Kafka listeners, under Kafka's config names: how many connections
//! (in all and per client address), how many requests and how many request bytes may wait in
//! the node at once, how long a connection may sit idle or take to send one frame, and how
//! many response bytes may wait for a client that does not read. One instance is shared by
//! every listener of the node.

use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use runnel_broker::{BrokerConfig, BrokerError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The memory pool counts in KiB so that a `u32` of permits covers any size.
const POOL_UNIT: usize = 1024;

/// The limits, read once from the broker config at start-up.
pub struct ConnectionLimits {
    /// `max.connections`: open Kafka connections on all listeners.
    connections: Arc<Semaphore>,
    /// `max.connections.per.ip` and its `max.connections.per.ip.overrides`.
    max_per_ip: usize,
    per_ip_overrides: HashMap<IpAddr, usize>,
    /// Open connections per client address.
    open_per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// `queued.max.requests`: requests read off sockets but not yet started, node-wide.
    pub(crate) queued: Arc<Semaphore>,
    /// `queued.max.request.bytes` in KiB, or `None` (-1) for no pool: bytes of request frames
    /// held by the node, from when a frame's length is known until its response is ready.
    memory: Option<Arc<Semaphore>>,
    memory_kib: usize,
    /// `socket.request.max.bytes`: the largest request frame.
    pub(crate) max_frame: usize,
    /// `connections.max.idle.ms`: a connection with no request in flight and nothing read
    /// for this long is closed.
    pub(crate) idle: Duration,
    /// `socket.request.read.timeout.ms`: once a frame's first byte arrives, the rest must
    /// follow within this time (a slow-loris sender is cut off).
    pub(crate) frame_read_timeout: Duration,
    /// `socket.send.buffer.bytes`: response bytes a connection may have waiting for the
    /// client to read before its next request waits.
    pub(crate) unwritten_max: usize,
    /// `fetch.max.bytes`: the most record bytes one Fetch response carries.
    pub(crate) fetch_max_bytes: usize,
    /// Warnings about misbehaving clients, rate-limited so a hostile one cannot flood the log.
    pub(crate) warnings: RateLimitedLog,
}

impl ConnectionLimits {
    pub fn from_config(config: &BrokerConfig) -> Result<Arc<Self>, BrokerError> {
        let memory_bytes = config.queued_max_request_bytes();
        let memory_kib = usize::try_from(memory_bytes)
            .ok()
            .map(|b| b.div_ceil(POOL_UNIT).clamp(1, Semaphore::MAX_PERMITS));
        Ok(Arc::new(ConnectionLimits {
            connections: Arc::new(Semaphore::new(
                config.max_connections().min(Semaphore::MAX_PERMITS),
            )),
            max_per_ip: config.max_connections_per_ip(),
            per_ip_overrides: parse_overrides(&config.max_connections_per_ip_overrides())?,
            open_per_ip: Mutex::new(HashMap::new()),
            queued: Arc::new(Semaphore::new(
                config
                    .queued_max_requests()
                    .clamp(1, Semaphore::MAX_PERMITS),
            )),
            memory: memory_kib.map(|k| Arc::new(Semaphore::new(k))),
            memory_kib: memory_kib.unwrap_or(0),
            max_frame: config.socket_request_max_bytes(),
            idle: Duration::from_millis(config.connections_max_idle_ms()),
            frame_read_timeout: Duration::from_millis(config.socket_request_read_timeout_ms()),
            unwritten_max: config.socket_send_buffer_bytes(),
            fetch_max_bytes: config.fetch_max_bytes(),
            warnings: RateLimitedLog::new(10, Duration::from_secs(1)),
        }))
    }

    /// Waits for a free connection slot (`max.connections`); `None` once closed.
    pub(crate) async fn connection_slot(self: &Arc<Self>) -> Option<OwnedSemaphorePermit> {
        self.connections.clone().acquire_owned().await.ok()
    }

    /// Registers a connection from `ip` unless that address already has its maximum
    /// (`max.connections.per.ip`, or its override); the returned guard unregisters it.
    pub(crate) fn admit_ip(self: &Arc<Self>, ip: IpAddr) -> Result<IpSlot, usize> {
        let max = self
            .per_ip_overrides
            .get(&ip)
            .copied()
            .unwrap_or(self.max_per_ip);
        let mut open = self.open_per_ip.lock();
        let count = open.entry(ip).or_insert(0);
        if *count >= max {
            if *count == 0 {
                open.remove(&ip);
            }
            return Err(max);
        }
        *count += 1;
        Ok(IpSlot {
            limits: self.clone(),
            ip,
        })
    }

    /// Whether `queued.max.request.bytes` sets up a memory pool (it is -1 for none).
    pub(crate) fn has_memory_pool(&self) -> bool {
        self.memory.is_some()
    }

    /// Reserves pool memory for a request frame of `bytes`, waiting while the pool is short.
    /// A frame larger than the whole pool waits until the pool is empty, then takes all of it,
    /// so it cannot wait forever.
    pub(crate) async fn reserve_memory(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let pool = self.memory.as_ref()?;
        let kib = bytes.div_ceil(POOL_UNIT).clamp(1, self.memory_kib) as u32;
        pool.clone().acquire_many_owned(kib).await.ok()
    }
}

/// One open connection counted against its client address.
pub(crate) struct IpSlot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.limits.open_per_ip.lock();
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// `max.connections.per.ip.overrides`: `host:count,host:count`, hosts as addresses or names
/// (resolved once, at start-up).
fn parse_overrides(spec: &str) -> Result<HashMap<IpAddr, usize>, BrokerError> {
    let mut out = HashMap::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let invalid = |why: &str| {
            BrokerError::InvalidConfig(format!(
                "max.connections.per.ip.overrides entry '{entry}': {why}"
            ))
        };
        let (host, count) = entry
            .rsplit_once(':')
            .ok_or_else(|| invalid("expected host:count"))?;
        let count: usize = count
            .trim()
            .parse()
            .map_err(|_| invalid("the count is not a number"))?;
        let host = host.trim().trim_start_matches('[').trim_end_matches(']');
        let ips: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => (host, 0)
                .to_socket_addrs()
                .map_err(|e| invalid(&format!("cannot resolve the host: {e}")))?
                .map(|a| a.ip())
                .collect(),
        };
        for ip in ips {
            out.insert(ip, count);
        }
    }
    Ok(out)
}

/// A log of warnings about clients that lets `burst` through per `window` and then counts
/// what it drops, reporting the count with the next warning it lets through.
pub(crate) struct RateLimitedLog {
    burst: u64,
    window: Duration,
    state: Mutex<(Instant, u64)>,
    suppressed: AtomicU64,
}

impl RateLimitedLog {
    fn new(burst: u64, window: Duration) -> Self {
        RateLimitedLog {
            burst,
            window,
            state: Mutex::new((Instant::now(), 0)),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Runs `log` (with the number of warnings suppressed since the last one) if the budget
    /// allows, else counts it as suppressed.
    pub(crate) fn warn(&self, log: impl FnOnce(u64)) {
        let allowed = {
            let mut state = self.state.lock();
            let now = Instant::now();
            if now.duration_since(state.0) >= self.window {
                *state = (now, 0);
            }
            state.1 += 1;
            state.1 <= self.burst
        };
        if allowed {
            log(self.suppressed.swap(0, Ordering::Relaxed));
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(pairs: &[(&str, &str)]) -> Arc<ConnectionLimits> {
        let config = BrokerConfig::from_pairs(pairs.iter().copied()).unwrap();
        ConnectionLimits::from_config(&config).unwrap()
    }

    #[test]
    fn per_ip_limit_and_overrides() {
        let l = limits(&[
            ("max.connections.per.ip", "2"),
            (
                "max.connections.per.ip.overrides",
                "127.0.0.2:0, 127.0.0.3:3",
            ),
        ]);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let s1 = l.admit_ip(a).unwrap();
        let _s2 = l.admit_ip(a).unwrap();
        assert_eq!(l.admit_ip(a).err(), Some(2));
        drop(s1);
        let _s3 = l.admit_ip(a).unwrap();
        assert_eq!(l.admit_ip("127.0.0.2".parse().unwrap()).err(), Some(0));
        let c: IpAddr = "127.0.0.3".parse().unwrap();
        let slots: Vec<_> = (0..3).map(|_| l.admit_ip(c).unwrap()).collect();
        assert!(l.admit_ip(c).is_err());
        drop(slots);
        assert!(l.open_per_ip.lock().get(&c).is_none());
    }

    #[test]
    fn bad_overrides_are_config_errors() {
        for bad in ["127.0.0.1", "127.0.0.1:x", "no-such-host.invalid:3"] {
            let config =
                BrokerConfig::from_pairs([("max.connections.per.ip.overrides", bad)]).unwrap();
            assert!(ConnectionLimits::from_config(&config).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn memory_pool_waits_and_lets_an_oversized_frame_through_alone() {
        let l = limits(&[("queued.max.request.bytes", "10240")]);
        let a = l.reserve_memory(8 * 1024).await.unwrap();
        // 4 KiB more does not fit while 8 are held.
        let waiting = tokio::time::timeout(Duration::from_millis(50), l.reserve_memory(4096));
        assert!(waiting.await.is_err());
        drop(a);
        let big = l.reserve_memory(1 << 30).await.unwrap();
        assert_eq!(big.num_permits(), 10);
        let unbounded = limits(&[("queued.max.request.bytes", "-1")]);
        assert!(unbounded.reserve_memory(1 << 30).await.is_none());
    }

    #[test]
    fn warnings_are_rate_limited() {
        let log = RateLimitedLog::new(3, Duration::from_secs(3600));
        let mut shown = 0;
        for _ in 0..100 {
            log.warn(|_| shown += 1);
        }
        assert_eq!(shown, 3);
        assert_eq!(log.suppressed.load(Ordering::Relaxed), 97);
    }
}
