//! What `runnel chaos` and the experiments inject their faults into: local processes they
//! started themselves, or the containers of a running docker-compose cluster. The workloads
//! and checkers do not care which; each fault is the closest each target has (a signal or a
//! docker command).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;

use crate::compose_cluster::ComposeCluster;
use crate::link_proxy::Link;
use crate::local_cluster::{bootstrap, describe_exit, LocalCluster, STOP_TIMEOUT};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum TargetKind {
    /// Nodes started by the run as local processes; faults are signals.
    Local,
    /// The containers of a running docker-compose cluster; faults are docker commands.
    Compose,
}

/// Which cluster a run works on; shared by `runnel chaos` and the experiments.
#[derive(clap::Args, Debug)]
pub(crate) struct TargetArgs {
    /// `local` starts nodes of its own as processes (faults are signals); `compose` uses the
    /// running docker-compose cluster (deploy/docker-compose.yml; faults are docker commands).
    #[arg(long, value_enum, default_value = "local")]
    pub(crate) target: TargetKind,
    /// The compose project of `--target compose` (as given to `docker-compose -p`).
    #[arg(
        long,
        env = "RUNNEL_COMPOSE_PROJECT",
        default_value = "runnel",
        value_name = "NAME"
    )]
    pub(crate) compose_project: String,
    /// `broker.session.timeout.ms` of the compose cluster's nodes: pauses, partitions and
    /// kills last longer than it (local nodes run with their own, shorter setting).
    #[arg(long, default_value_t = 3000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub(crate) session_timeout_ms: u64,
}

pub(crate) enum Target {
    Local(LocalCluster),
    Compose(ComposeCluster),
}

impl Target {
    pub(crate) fn ids(&self) -> Vec<u16> {
        match self {
            Target::Local(c) => c.ids(),
            Target::Compose(c) => c.ids(),
        }
    }

    pub(crate) fn bootstrap(&self) -> String {
        match self {
            Target::Local(c) => bootstrap(c.plan()),
            Target::Compose(c) => c.bootstrap(),
        }
    }

    /// Every node's HTTP endpoint, by node id.
    pub(crate) fn https(&self) -> Vec<SocketAddr> {
        match self {
            Target::Local(c) => c.plan().iter().map(|n| n.http).collect(),
            Target::Compose(c) => c.nodes().iter().map(|n| n.http).collect(),
        }
    }

    /// The Kafka address host clients reach node `id` at.
    pub(crate) fn kafka_of(&self, id: u16) -> Option<SocketAddr> {
        match self {
            Target::Local(c) => c.plan().iter().find(|n| n.id == id).map(|n| n.kafka),
            Target::Compose(c) => c.nodes().iter().find(|n| n.id == id).map(|n| n.kafka),
        }
    }

    /// Node `id`'s data dir, for faults on its files (local nodes only).
    pub(crate) fn data_dir_of(&self, id: u16) -> Option<std::path::PathBuf> {
        match self {
            Target::Local(c) => c
                .plan()
                .iter()
                .find(|n| n.id == id)
                .map(|n| n.data_dir.clone()),
            Target::Compose(_) => None,
        }
    }

    /// Brings every node up: starts the local processes, or starts stopped containers.
    pub(crate) async fn start_all(&mut self) -> anyhow::Result<()> {
        match self {
            Target::Local(c) => c.start_all().await,
            Target::Compose(c) => c.start_stopped().await,
        }
    }

    pub(crate) async fn is_running(&mut self, id: u16) -> bool {
        match self {
            Target::Local(c) => c.is_running(id),
            Target::Compose(c) => c.is_running(id).await,
        }
    }

    pub(crate) async fn unhealthy(&self, ids: &[u16]) -> Vec<u16> {
        match self {
            Target::Local(c) => c.unhealthy(ids).await,
            Target::Compose(c) => c.unhealthy(ids).await,
        }
    }

    /// SIGKILL (a process) or `docker kill --signal KILL` (a container).
    pub(crate) async fn kill(&mut self, id: u16) -> anyhow::Result<&'static str> {
        match self {
            Target::Local(c) => {
                c.kill(id).await;
                Ok("SIGKILL")
            }
            Target::Compose(c) => c.kill(id).await.map(|()| "docker kill"),
        }
    }

    pub(crate) async fn start(&mut self, id: u16) -> anyhow::Result<&'static str> {
        match self {
            Target::Local(c) => c.start(id).map(|()| "restart"),
            Target::Compose(c) => c.start(id).await.map(|()| "docker start"),
        }
    }

    /// SIGSTOP or `docker pause`: the node keeps its sockets but does nothing.
    pub(crate) async fn pause(&mut self, id: u16) -> anyhow::Result<&'static str> {
        match self {
            Target::Local(c) => c.signal(id, "STOP").await.map(|()| "SIGSTOP"),
            Target::Compose(c) => c.pause(id).await.map(|()| "docker pause"),
        }
    }

    pub(crate) async fn resume(&mut self, id: u16) -> anyhow::Result<&'static str> {
        match self {
            Target::Local(c) => c.signal(id, "CONT").await.map(|()| "SIGCONT"),
            Target::Compose(c) => c.unpause(id).await.map(|()| "docker unpause"),
        }
    }

    /// A graceful restart: SIGTERM and start again (SIGKILL if it does not stop in time), or
    /// `docker restart`. Returns the steps taken, in order.
    pub(crate) async fn restart_gracefully(
        &mut self,
        id: u16,
    ) -> anyhow::Result<Vec<&'static str>> {
        match self {
            Target::Local(c) => {
                c.signal(id, "TERM").await?;
                let mut steps = vec!["SIGTERM"];
                if !c.wait_exit(id, STOP_TIMEOUT).await {
                    c.kill(id).await;
                    steps.push("SIGKILL (it did not stop after SIGTERM)");
                }
                c.start(id)?;
                steps.push("restart");
                Ok(steps)
            }
            Target::Compose(c) => {
                c.restart(id).await?;
                Ok(vec!["docker restart"])
            }
        }
    }

    /// Cuts node `id` off from the other nodes, both ways (`docker network disconnect`, or
    /// every link of it through a local cluster's link proxy); clients still reach it.
    pub(crate) async fn isolate(&mut self, id: u16) -> anyhow::Result<&'static str> {
        match self {
            Target::Local(c) => {
                let proxy = c.link_proxy()?;
                proxy.cut(&proxy.links_of(id));
                Ok("cut every link of")
            }
            Target::Compose(c) => c.isolate(id).await.map(|()| "docker network disconnect"),
        }
    }

    pub(crate) async fn heal(&mut self, id: u16) -> anyhow::Result<&'static str> {
        match self {
            Target::Local(c) => {
                let proxy = c.link_proxy()?;
                proxy.heal(&proxy.links_of(id));
                Ok("heal every link of")
            }
            Target::Compose(c) => c.heal(id).await.map(|()| "docker network connect"),
        }
    }

    /// Stalls the bytes along each directed link (from, to) between local nodes.
    pub(crate) fn cut_links(&mut self, links: &[Link]) -> anyhow::Result<()> {
        match self {
            Target::Local(c) => c.link_proxy().map(|p| p.cut(links)),
            Target::Compose(_) => bail!("compose nodes can only be cut off whole"),
        }
    }

    pub(crate) fn heal_links(&mut self, links: &[Link]) -> anyhow::Result<()> {
        match self {
            Target::Local(c) => c.link_proxy().map(|p| p.heal(links)),
            Target::Compose(_) => bail!("compose nodes can only be cut off whole"),
        }
    }

    /// A local node that exited by itself, described; containers are not watched.
    pub(crate) fn exited(&mut self) -> Option<(u16, String)> {
        match self {
            Target::Local(c) => c.exited().map(|(id, status)| (id, describe_exit(status))),
            Target::Compose(_) => None,
        }
    }

    /// Starts again any node that stopped by itself; says which.
    pub(crate) async fn restart_exited(&mut self) {
        match self {
            Target::Local(c) => {
                while let Some((id, status)) = c.exited() {
                    eprintln!(
                        "runnel: node {id} had exited ({}); starting it again",
                        describe_exit(status)
                    );
                    if let Err(e) = c.start(id) {
                        eprintln!("runnel: {e:#}");
                        return;
                    }
                }
            }
            Target::Compose(c) => c.restore().await,
        }
    }

    /// At the end of a run, whatever happened: local nodes are killed; containers are left
    /// running, unpaused and connected.
    pub(crate) async fn finish(&mut self) {
        match self {
            Target::Local(c) => c.kill_all().await,
            Target::Compose(c) => c.restore().await,
        }
    }
}

/// How long restoring a compose cluster after an interrupted run may take.
pub(crate) const RESTORE_TIMEOUT: Duration = Duration::from_secs(120);
