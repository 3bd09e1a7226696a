//! The broker's side of liveness (Kafka's BrokerLifecycleManager): register with the active
//! controller, send a heartbeat every `broker.heartbeat.interval.ms` carrying how far this
//! node has applied the metadata log, register again when told the epoch is stale, and on
//! SIGTERM ask for a controlled shutdown so leadership moves away before the process exits.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use runnel_controller::client::ControllerClient;
use runnel_rpc::controller::v1 as pb;
use runnel_rpc::error_code;
use runnel_rpc::ResponseError;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use uuid::Uuid;

/// Where this broker stands with the controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BrokerState {
    /// Not registered yet (no quorum, or no answer).
    Registering,
    /// Registered but fenced: catching up with the metadata log, or its session expired.
    Fenced,
    /// May lead partitions and serve clients.
    Unfenced,
}

/// What a broker tells the controller about itself.
pub(crate) struct Registration {
    pub(crate) node_id: i32,
    /// Every Kafka listener as (name, advertised host, advertised port); at least one.
    pub(crate) listeners: Vec<(String, String, i32)>,
    pub(crate) rpc_address: String,
    pub(crate) rack: Option<String>,
    /// The data dir's id (KIP-858).
    pub(crate) directory_id: Uuid,
    /// The epoch the clean-shutdown marker held at start, -1 without one (KIP-966).
    pub(crate) previous_broker_epoch: i64,
}

pub(crate) struct Lifecycle {
    client: ControllerClient,
    registration: Registration,
    incarnation: Uuid,
    heartbeat_interval: Duration,
    /// The metadata offset this broker has applied (set by the node's apply loop).
    applied: Arc<AtomicU64>,
    state: watch::Sender<BrokerState>,
    epoch: std::sync::atomic::AtomicI64,
    /// The data dir went offline: every heartbeat says so, which keeps this broker fenced.
    log_dir_offline: AtomicBool,
    /// Cuts the pause before the next heartbeat short.
    wake: Notify,
}

impl Lifecycle {
    pub(crate) fn new(
        client: ControllerClient,
        registration: Registration,
        incarnation: Uuid,
        heartbeat_interval: Duration,
        applied: Arc<AtomicU64>,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            registration,
            incarnation,
            heartbeat_interval,
            applied,
            state: watch::channel(BrokerState::Registering).0,
            epoch: std::sync::atomic::AtomicI64::new(-1),
            log_dir_offline: AtomicBool::new(false),
            wake: Notify::new(),
        })
    }

    /// The epoch of the current registration, -1 before the first.
    pub(crate) fn broker_epoch(&self) -> i64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Reports the data dir offline to the controller from the next heartbeat on, which is
    /// sent at once.
    pub(crate) fn report_log_dir_offline(&self) {
        self.log_dir_offline.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    pub(crate) fn state(&self) -> watch::Receiver<BrokerState> {
        self.state.subscribe()
    }

    fn set_state(&self, state: BrokerState) {
        self.state.send_if_modified(|s| {
            let changed = *s != state;
            if changed {
                tracing::info!(from = ?*s, to = ?state, "broker state");
            }
            *s = state;
            changed
        });
    }

    /// Registers (retrying until it works), then sends heartbeats until `shutdown`.
    pub(crate) async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut registered = false;
        let mut warned_at = Instant::now();
        loop {
            if *shutdown.borrow() {
                return;
            }
            if !registered {
                registered = self.register().await;
                if !registered && warned_at.elapsed() > Duration::from_secs(10) {
                    tracing::warn!(
                        "still waiting to register with the controller quorum; check --voters and that a majority of voters is up"
                    );
                    warned_at = Instant::now();
                }
            } else {
                registered = self.heartbeat().await.is_some();
            }
            let pause = if registered {
                self.heartbeat_interval
            } else {
                Duration::from_millis(500)
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// One registration attempt; true when registered.
    async fn register(&self) -> bool {
        let r = &self.registration;
        let request = pb::RegisterBrokerRequest {
            node_id: r.node_id,
            incarnation_id: self.incarnation.as_bytes().to_vec().into(),
            // The first listener also fills the fields of controllers older than listeners.
            kafka_host: r.listeners[0].1.clone(),
            kafka_port: r.listeners[0].2,
            listeners: r
                .listeners
                .iter()
                .map(|(name, host, port)| pb::KafkaListener {
                    name: name.clone(),
                    host: host.clone(),
                    port: *port,
                })
                .collect(),
            rpc_address: r.rpc_address.clone(),
            rack: r.rack.clone(),
            cluster_id: String::new(),
            directory_id: Some(r.directory_id.as_bytes().to_vec().into()),
            previous_broker_epoch: Some(r.previous_broker_epoch),
        };
        match self.client.register(request, self.heartbeat_interval).await {
            Ok(resp) if error_code::decode(resp.error_code).is_none() => {
                tracing::info!(
                    broker_epoch = resp.broker_epoch,
                    "registered with the controller"
                );
                self.epoch.store(resp.broker_epoch, Ordering::Relaxed);
                self.set_state(BrokerState::Fenced);
                // Heartbeat at once: that is what unfences a caught-up broker.
                self.heartbeat().await.is_some()
            }
            Ok(resp) => {
                tracing::warn!(
                    error = ?error_code::decode(resp.error_code),
                    "registration refused: {}",
                    resp.error_message
                );
                false
            }
            Err(e) => {
                tracing::debug!(%e, "registration failed");
                false
            }
        }
    }

    /// A heartbeat with this broker's epoch and how far it has applied the metadata log.
    fn heartbeat_request(&self, wants_shutdown: bool) -> pb::BrokerHeartbeatRequest {
        pb::BrokerHeartbeatRequest {
            node_id: self.registration.node_id,
            broker_epoch: self.epoch.load(Ordering::Relaxed),
            current_metadata_offset: i64::try_from(self.applied.load(Ordering::Acquire))
                .unwrap_or(i64::MAX),
            wants_fence: false,
            wants_shutdown,
            log_dir_offline: self.log_dir_offline.load(Ordering::Relaxed),
        }
    }

    /// One heartbeat; `None` when the broker must register again. A heartbeat that gets no
    /// answer keeps the state: the controller decides about fencing, not the broker.
    async fn heartbeat(&self) -> Option<pb::BrokerHeartbeatResponse> {
        let request = self.heartbeat_request(false);
        match self
            .client
            .heartbeat(request, self.heartbeat_interval)
            .await
        {
            Ok(resp)
                if error_code::decode(resp.error_code) == Some(ResponseError::StaleBrokerEpoch) =>
            {
                tracing::warn!(
                    "the controller no longer knows this broker's epoch; registering again"
                );
                self.set_state(BrokerState::Registering);
                None
            }
            Ok(resp) if error_code::decode(resp.error_code).is_none() => {
                self.set_state(if resp.is_fenced {
                    BrokerState::Fenced
                } else {
                    BrokerState::Unfenced
                });
                Some(resp)
            }
            Ok(resp) => {
                tracing::warn!(error = ?error_code::decode(resp.error_code), "heartbeat refused");
                Some(resp)
            }
            Err(e) => {
                tracing::debug!(%e, "heartbeat got no answer");
                Some(pb::BrokerHeartbeatResponse::default())
            }
        }
    }

    /// Controlled shutdown: asks the controller to move this broker's leaderships away and
    /// waits (at most `limit`) until it says the broker may stop. Without an answer (no
    /// quorum left, e.g. the whole cluster is stopping) it gives up at once: the session
    /// timeout will fence this broker instead.
    pub(crate) async fn controlled_shutdown(&self, limit: Duration) {
        if *self.state.borrow() == BrokerState::Registering {
            return;
        }
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let request = self.heartbeat_request(true);
            match self
                .client
                .heartbeat(request, left.min(self.heartbeat_interval))
                .await
            {
                Ok(resp) if resp.should_shut_down => {
                    self.set_state(BrokerState::Fenced);
                    tracing::info!("controlled shutdown: leadership moved away");
                    return;
                }
                Ok(resp) if error_code::decode(resp.error_code).is_some() => {
                    tracing::warn!(
                        error = ?error_code::decode(resp.error_code),
                        "controlled shutdown refused; stopping anyway"
                    );
                    return;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => {
                    tracing::warn!(%e, "controlled shutdown: no active controller answered; stopping anyway");
                    return;
                }
            }
        }
        tracing::warn!("controlled shutdown did not complete within {limit:?}; stopping anyway");
    }
}
