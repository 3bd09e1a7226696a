//! The active controller's duties beyond answering requests, as Kafka's KRaft controller has
//! them: it remembers when each broker last sent a heartbeat, fences a broker whose session
//! expired (which moves its leaderships to other in-sync replicas), initializes the cluster id
//! once, and restores preferred leaders (`auto.leader.rebalance.enable`).
//!
//! Heartbeat times live only in the leader's memory, as in Kafka: they are not part of the
//! metadata log. A controller that becomes leader gives every broker a full session from that
//! moment, so a leader change never fences a healthy broker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use crate::command::{ControllerCommand, ElectionType};
use crate::image::MetadataImage;
use crate::raft::Controller;

/// How often the leader looks for expired sessions and unbalanced leaders.
const TICK: Duration = Duration::from_millis(250);

/// Broker liveness settings, with Kafka's names and defaults.
#[derive(Clone, Debug)]
pub struct LivenessSettings {
    /// `broker.session.timeout.ms` (9 s): a broker silent this long is fenced.
    pub session_timeout: Duration,
    /// `broker.heartbeat.interval.ms` (2 s): how often brokers send heartbeats.
    pub heartbeat_interval: Duration,
    /// `auto.leader.rebalance.enable` (true): move leadership back to preferred replicas.
    pub auto_rebalance: bool,
    /// `leader.imbalance.check.interval.seconds` (300 s): how often to look.
    pub imbalance_check_interval: Duration,
    /// `min.insync.replicas` (1): the cluster default the metadata records, which enables
    /// eligible leader replicas (KIP-966).
    pub min_insync_replicas: i32,
}

impl Default for LivenessSettings {
    fn default() -> Self {
        Self {
            session_timeout: Duration::from_millis(9_000),
            heartbeat_interval: Duration::from_millis(2_000),
            auto_rebalance: true,
            imbalance_check_interval: Duration::from_secs(300),
            min_insync_replicas: 1,
        }
    }
}

/// What the leader knows of one broker's session.
#[derive(Clone, Copy, Debug)]
struct Session {
    last_seen: Instant,
    /// The broker is caught up with the metadata log once it has applied this offset: its own
    /// registration, or what the leader had applied when it took over.
    required_offset: u64,
}

/// The leader's in-memory state, reset whenever this node becomes leader in a new term.
#[derive(Debug)]
struct LeaderState {
    term: u64,
    since: Instant,
    baseline_offset: u64,
    sessions: HashMap<i32, Session>,
    last_rebalance: Instant,
}

/// Broker sessions and the leader's timers.
pub struct BrokerLiveness {
    controller: Arc<Controller>,
    settings: LivenessSettings,
    state: Mutex<Option<LeaderState>>,
}

impl BrokerLiveness {
    pub fn new(controller: Arc<Controller>, settings: LivenessSettings) -> Arc<Self> {
        Arc::new(Self {
            controller,
            settings,
            state: Mutex::new(None),
        })
    }

    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    pub fn settings(&self) -> &LivenessSettings {
        &self.settings
    }

    /// Runs `f` on the leader state of the current term, creating it when this node has just
    /// become leader; `None` when this node is not the leader.
    fn with_leader_state<T>(&self, f: impl FnOnce(&mut LeaderState) -> T) -> Option<T> {
        let (term, applied) = {
            let metrics = self.controller.metrics();
            let m = metrics.borrow();
            if m.state != openraft::ServerState::Leader
                || m.current_leader != Some(self.controller.node_id())
            {
                drop(m);
                *self.state.lock() = None;
                return None;
            }
            (m.current_term, m.last_applied.map_or(0, |l| l.index))
        };
        let mut state = self.state.lock();
        if state.as_ref().is_none_or(|s| s.term != term) {
            tracing::info!(term, "this node is the active controller");
            let now = Instant::now();
            *state = Some(LeaderState {
                term,
                since: now,
                baseline_offset: applied,
                sessions: HashMap::new(),
                last_rebalance: now,
            });
        }
        state.as_mut().map(f)
    }

    /// A broker registered at log offset `offset`: its session starts now.
    pub(crate) fn on_register(&self, broker: i32, offset: u64) {
        self.with_leader_state(|s| {
            s.sessions.insert(
                broker,
                Session {
                    last_seen: Instant::now(),
                    required_offset: offset,
                },
            );
        });
    }

    /// A heartbeat from `broker`: extends its session. Returns the metadata offset the broker
    /// must have applied to count as caught up, or `None` when this node is not the leader.
    pub(crate) fn on_heartbeat(&self, broker: i32) -> Option<u64> {
        self.with_leader_state(|s| {
            let baseline = s.baseline_offset;
            let session = s.sessions.entry(broker).or_insert(Session {
                last_seen: Instant::now(),
                required_offset: baseline,
            });
            session.last_seen = Instant::now();
            session.required_offset
        })
    }

    /// Brokers that are unfenced in `image` but whose session has expired.
    fn expired(&self, image: &MetadataImage) -> Vec<(i32, Duration)> {
        let now = Instant::now();
        self.with_leader_state(|s| {
            image
                .live_brokers()
                .filter_map(|b| {
                    let last = s.sessions.get(&b.id).map_or(s.since, |x| x.last_seen);
                    let silent = now.saturating_duration_since(last);
                    (silent > self.settings.session_timeout).then_some((b.id, silent))
                })
                .collect()
        })
        .unwrap_or_default()
    }

    /// Whether a preferred-leader election is due (and marks it done).
    fn rebalance_due(&self) -> bool {
        if !self.settings.auto_rebalance {
            return false;
        }
        self.with_leader_state(|s| {
            let due = s.last_rebalance.elapsed() >= self.settings.imbalance_check_interval;
            if due {
                s.last_rebalance = Instant::now();
            }
            due
        })
        .unwrap_or(false)
    }

    /// The leader's timer loop, until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            if !self.controller.is_leader() {
                // Drops the previous term's sessions.
                self.with_leader_state(|_| ());
                continue;
            }
            let image = self.controller.subscribe().borrow().data.clone();
            if image.cluster_id.is_empty() {
                let cluster_id = new_cluster_id();
                self.propose(
                    ControllerCommand::InitCluster { cluster_id },
                    "set the cluster id",
                )
                .await;
            }
            if image.min_insync_replicas != Some(self.settings.min_insync_replicas) {
                self.propose(
                    ControllerCommand::SetMinInsyncReplicas {
                        value: self.settings.min_insync_replicas,
                    },
                    "record the cluster's min.insync.replicas",
                )
                .await;
            }
            for (id, silent) in self.expired(&image) {
                tracing::warn!(
                    broker = id,
                    silent_ms = silent.as_millis() as u64,
                    "fencing broker: no heartbeat within broker.session.timeout.ms"
                );
                self.propose(ControllerCommand::FenceBroker { id }, "fence a broker")
                    .await;
            }
            if self.rebalance_due() && has_imbalance(&image) {
                tracing::info!("moving leadership back to preferred replicas");
                self.propose(
                    ControllerCommand::ElectLeaders {
                        topic_partitions: None,
                        election: ElectionType::Preferred,
                    },
                    "elect preferred leaders",
                )
                .await;
            }
        }
    }

    async fn propose(&self, cmd: ControllerCommand, what: &str) {
        match self.controller.write(cmd).await {
            Ok(committed) => {
                if let Err(e) = committed.result {
                    tracing::warn!(%e, "could not {what}");
                }
            }
            Err(e) => tracing::debug!(%e, "could not {what}"),
        }
    }
}

/// A partition whose preferred replica is live and in sync but not the leader.
fn has_imbalance(image: &MetadataImage) -> bool {
    image.topics.values().flat_map(|t| &t.partitions).any(|p| {
        let preferred = p.preferred_leader();
        p.leader != preferred && image.is_live(preferred) && p.isr.contains(&preferred)
    })
}

/// A cluster id in Kafka's format: a random UUID, URL-safe base64 without padding (22 chars).
pub fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bits = Uuid::new_v4().as_u128();
    (0..22u32)
        .map(|i| ALPHABET[((bits >> (6 * i)) & 63) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::apply;
    use crate::command::ControllerCommand::*;

    #[test]
    fn cluster_id_is_22_url_safe_chars() {
        let id = new_cluster_id();
        assert_eq!(id.len(), 22);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(id, new_cluster_id());
    }

    #[test]
    fn imbalance_needs_a_live_in_sync_preferred_replica() {
        let mut image = MetadataImage::default();
        apply(
            &mut image,
            &InitCluster {
                cluster_id: "c".into(),
            },
        )
        .unwrap();
        for id in 1..=2 {
            apply(
                &mut image,
                &RegisterBroker {
                    id,
                    incarnation: Uuid::from_u128(id as u128),
                    host: "h".into(),
                    port: 9092,
                    listeners: Vec::new(),
                    rpc_address: "h:1".into(),
                    rack: None,
                    directory_id: None,
                    previous_broker_epoch: None,
                },
            )
            .unwrap();
            apply(&mut image, &UnfenceBroker { id }).unwrap();
        }
        apply(
            &mut image,
            &CreateTopic {
                name: "t".into(),
                id: Uuid::from_u128(7),
                partitions: 1,
                replication_factor: 2,
                assignment: Some(vec![vec![1, 2]]),
                configs: Default::default(),
            },
        )
        .unwrap();
        assert!(!has_imbalance(&image));
        apply(&mut image, &FenceBroker { id: 1 }).unwrap();
        // Leader moved to 2; the preferred replica 1 is fenced: nothing to do yet.
        assert!(!has_imbalance(&image));
        apply(&mut image, &UnfenceBroker { id: 1 }).unwrap();
        // Back, but out of the ISR until its leader lets it in: still nothing to do.
        let in_isr = image.topics["t"].partitions[0].isr.contains(&1);
        assert_eq!(has_imbalance(&image), in_isr);
    }
}
