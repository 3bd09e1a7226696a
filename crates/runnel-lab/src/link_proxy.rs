//! Network partitions between the processes of a local cluster: a TCP proxy in front of each
//! node's RPC listener (Raft, controller RPCs and replica fetches share it), through which
//! every other node reaches it. Cutting the directed link (a, b) stalls the bytes node `a`
//! sends to node `b` on every connection between them, whichever side opened it; healing it
//! lets them flow again on the same connections, as TCP retransmission would. The cut is
//! one-way at the level of messages: the other direction keeps flowing (IP packets lost one
//! way would soon stall a TCP connection both ways, its acknowledgements being lost too).
//! Client (Kafka) traffic does not go through it.
//!
//! All nodes connect from 127.0.0.1, so the proxy tells them apart by process: the peer's
//! socket is found in /proc/net/tcp{,6} by its address pair, and its inode among the open
//! files of each node's process. Linux only; a connection of any other process (a tool, a
//! test) is never cut.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener as StdTcpListener};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The bytes one direction of a connection holds at most while its link is cut (the rest
/// waits in the kernel's socket buffers, which fill up and stall the sender).
const CHUNK: usize = 16 * 1024;

/// Whether the proxy can tell which node a connection comes from on this system.
pub(crate) const SUPPORTED: bool = cfg!(target_os = "linux");

/// A directed link: bytes from the first node to the second.
pub(crate) type Link = (u16, u16);

/// The process id of each running node, kept current by whoever starts and stops them.
pub(crate) type NodePids = BTreeMap<u16, u32>;

/// One proxied node: the proxy listens at `listen` (the address the other nodes know it by)
/// and forwards to `upstream` (where the node itself listens).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Route {
    pub(crate) node: u16,
    pub(crate) listen: SocketAddr,
    pub(crate) upstream: SocketAddr,
}

/// The running proxy; dropping it stops every listener and connection.
pub(crate) struct LinkProxy {
    cuts: watch::Sender<BTreeSet<Link>>,
    nodes: Vec<u16>,
    _tasks: JoinSet<()>,
}

impl LinkProxy {
    /// Binds every route's listen address and starts forwarding; `pids` names the nodes'
    /// processes. Must run inside a tokio runtime.
    pub(crate) fn start(routes: &[Route], pids: watch::Receiver<NodePids>) -> anyhow::Result<Self> {
        let (cuts, _) = watch::channel(BTreeSet::new());
        let mut tasks = JoinSet::new();
        for route in routes {
            let listener = StdTcpListener::bind(route.listen)
                .and_then(|l| {
                    l.set_nonblocking(true)?;
                    TcpListener::from_std(l)
                })
                .with_context(|| {
                    format!(
                        "cannot listen at {} (node {}'s link proxy)",
                        route.listen, route.node
                    )
                })?;
            tasks.spawn(serve(listener, *route, pids.clone(), cuts.subscribe()));
        }
        Ok(Self {
            cuts,
            nodes: routes.iter().map(|r| r.node).collect(),
            _tasks: tasks,
        })
    }

    /// Stalls the bytes flowing along each of `links`.
    pub(crate) fn cut(&self, links: &[Link]) {
        self.cuts
            .send_modify(|cuts| cuts.extend(links.iter().copied()));
    }

    /// Lets the bytes along each of `links` flow again.
    pub(crate) fn heal(&self, links: &[Link]) {
        self.cuts.send_modify(|cuts| {
            for link in links {
                cuts.remove(link);
            }
        });
    }

    /// Every link between `node` and the other nodes, both ways.
    pub(crate) fn links_of(&self, node: u16) -> Vec<Link> {
        self.nodes
            .iter()
            .filter(|&&other| other != node)
            .flat_map(|&other| [(node, other), (other, node)])
            .collect()
    }
}

/// Accepts connections to one node's proxy address until aborted; each connection's task
/// ends with the connection, or when this task is aborted.
async fn serve(
    listener: TcpListener,
    route: Route,
    pids: watch::Receiver<NodePids>,
    cuts: watch::Receiver<BTreeSet<Link>>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, peer)) = accepted else {
                    // Out of file descriptors, say: try again shortly rather than spin.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let pids = pids.borrow().clone();
                connections.spawn(forward(client, peer, route, pids, cuts.clone()));
            }
            // Reap finished connections so the set holds only live ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// How a direction of a connection ended.
enum Ended {
    /// The sender closed its side cleanly; the shutdown was passed on.
    Closed,
    /// The receiver is gone: nothing more can be delivered this way.
    Undeliverable,
    /// The sender's side failed (reset): the whole connection is torn down.
    Reset,
}

async fn forward(
    client: TcpStream,
    peer: SocketAddr,
    route: Route,
    pids: NodePids,
    cuts: watch::Receiver<BTreeSet<Link>>,
) {
    let listen = route.listen;
    let source = tokio::task::spawn_blocking(move || source_node(peer, listen, &pids))
        .await
        .ok()
        .flatten();
    let Ok(upstream) = TcpStream::connect(route.upstream).await else {
        // The node is down: the client sees its connection closed, as by a reset.
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    // A connection from outside the cluster has no links to cut.
    let outbound = source.map(|s| (s, route.node));
    let inbound = source.map(|s| (route.node, s));
    let to_node = pump(client_read, upstream_write, outbound, cuts.clone());
    let to_client = pump(upstream_read, client_write, inbound, cuts);
    tokio::pin!(to_node, to_client);
    let (mut node_done, mut client_done) = (false, false);
    while !(node_done && client_done) {
        let ended = tokio::select! {
            e = &mut to_node, if !node_done => { node_done = true; e }
            e = &mut to_client, if !client_done => { client_done = true; e }
        };
        if matches!(ended, Ended::Reset) {
            return;
        }
    }
}

/// Copies `from` to `to` while `link` is not cut, holding at most one chunk while it is.
/// A close or a reset of `from` waits for the link too: it travels with the bytes.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    link: Option<Link>,
    mut cuts: watch::Receiver<BTreeSet<Link>>,
) -> Ended {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let read = from.read(&mut buf).await;
        if let Some(link) = link {
            // Err: the proxy is being dropped, and this task with it.
            let _ = cuts.wait_for(|cut| !cut.contains(&link)).await;
        }
        match read {
            Ok(0) => {
                let _ = to.shutdown().await;
                return Ended::Closed;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return Ended::Undeliverable;
                }
            }
            Err(_) => return Ended::Reset,
        }
    }
}

/// The node whose process holds the client end of the connection from `peer` to `listen`,
/// if any. Linux only: elsewhere always `None`.
pub(crate) fn source_node(peer: SocketAddr, listen: SocketAddr, pids: &NodePids) -> Option<u16> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .into_iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .find_map(|table| socket_inode(&table, peer, listen))?;
    let wanted = format!("socket:[{inode}]");
    pids.iter().find_map(|(&node, &pid)| {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
        fds.filter_map(Result::ok)
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == wanted.as_str()))
            .then_some(node)
    })
}

/// The inode of the socket whose local address is `local` and remote address `remote` in a
/// /proc/net/tcp or tcp6 table.
fn socket_inode(table: &str, local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (l, r, inode) = (fields.get(1)?, fields.get(2)?, fields.get(9)?);
        let inode: u64 = inode.parse().ok()?;
        (inode != 0
            && parse_proc_addr(l)? == canonical(local)
            && parse_proc_addr(r)? == canonical(remote))
        .then_some(inode)
    })
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(addr, |v4| SocketAddr::new(IpAddr::V4(v4), addr.port())),
        IpAddr::V4(_) => addr,
    }
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): the address as the kernel
/// prints it, each 32-bit word in the machine's byte order.
fn parse_proc_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| {
        ip.get(i * 8..i * 8 + 8)
            .and_then(|w| u32::from_str_radix(w, 16).ok())
            .map(u32::to_ne_bytes)
    };
    let ip = match ip.len() {
        8 => IpAddr::from(word(0)?),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(canonical(SocketAddr::new(ip, port)))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);
    const STALLED: Duration = Duration::from_millis(300);

    fn loopback(port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, port))
    }

    /// A free port on 127.0.0.1 (free when this returns).
    fn free_port() -> SocketAddr {
        StdTcpListener::bind(loopback(0))
            .and_then(|l| l.local_addr())
            .unwrap()
    }

    /// A proxy for node 2 in front of a listener of this test, with these node processes.
    async fn proxy_for_node_2(pids: NodePids) -> (LinkProxy, SocketAddr, TcpListener) {
        let upstream = TcpListener::bind(loopback(0)).await.unwrap();
        let listen = free_port();
        let route = Route {
            node: 2,
            listen,
            upstream: upstream.local_addr().unwrap(),
        };
        let (_tx, pids) = watch::channel(pids);
        let proxy = LinkProxy::start(&[route], pids).unwrap();
        (proxy, listen, upstream)
    }

    /// This test process registered as node 1: the test's connections are node 1's.
    fn test_is_node_1() -> NodePids {
        NodePids::from([(1, std::process::id())])
    }

    /// Connects through the proxy; returns the client end and the upstream's end.
    async fn connect(listen: SocketAddr, upstream: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listen).await.unwrap();
        let (server, _) = tokio::time::timeout(WAIT, upstream.accept())
            .await
            .unwrap()
            .unwrap();
        (client, server)
    }

    async fn read_exact(stream: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        tokio::time::timeout(WAIT, stream.read_exact(&mut buf))
            .await
            .expect("bytes did not arrive in time")
            .unwrap();
        buf
    }

    async fn arrives_not(stream: &mut TcpStream) {
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(STALLED, stream.read(&mut buf)).await;
        assert!(read.is_err(), "bytes crossed a cut link: {read:?}");
    }

    #[tokio::test]
    async fn forwards_both_ways_and_passes_a_close_on() {
        let (_proxy, listen, upstream) = proxy_for_node_2(test_is_node_1()).await;
        let (mut client, mut server) = connect(listen, &upstream).await;
        client.write_all(b"ping").await.unwrap();
        assert_eq!(read_exact(&mut server, 4).await, b"ping");
        server.write_all(b"pong").await.unwrap();
        assert_eq!(read_exact(&mut client, 4).await, b"pong");
        drop(client);
        let mut rest = Vec::new();
        tokio::time::timeout(WAIT, server.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn a_directed_cut_stalls_one_direction_until_healed() {
        let (proxy, listen, upstream) = proxy_for_node_2(test_is_node_1()).await;
        let (mut client, mut server) = connect(listen, &upstream).await;
        // Let the proxy identify the connection before the cut.
        client.write_all(b"a").await.unwrap();
        assert_eq!(read_exact(&mut server, 1).await, b"a");

        proxy.cut(&[(1, 2)]);
        assert_eq!(*proxy.cuts.borrow(), BTreeSet::from([(1, 2)]));
        client.write_all(b"lost for now").await.unwrap();
        arrives_not(&mut server).await;
        // The other direction still flows.
        server.write_all(b"back").await.unwrap();
        assert_eq!(read_exact(&mut client, 4).await, b"back");

        // Healing delivers the stalled bytes on the same connection, in order.
        proxy.heal(&[(1, 2)]);
        client.write_all(b"!").await.unwrap();
        assert_eq!(read_exact(&mut server, 13).await, b"lost for now!");

        // The reverse cut stalls the node's answers, and a close waits for the link too.
        proxy.cut(&[(2, 1)]);
        server.write_all(b"late").await.unwrap();
        drop(server);
        arrives_not(&mut client).await;
        proxy.heal(&[(2, 1)]);
        let mut rest = Vec::new();
        tokio::time::timeout(WAIT, client.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rest, b"late");
    }

    #[tokio::test]
    async fn a_cut_applies_to_connections_opened_during_it() {
        let (proxy, listen, upstream) = proxy_for_node_2(test_is_node_1()).await;
        proxy.cut(&proxy.links_of(1));
        let (mut client, mut server) = connect(listen, &upstream).await;
        client.write_all(b"x").await.unwrap();
        server.write_all(b"y").await.unwrap();
        arrives_not(&mut server).await;
        arrives_not(&mut client).await;
        proxy.heal(&proxy.links_of(1));
        assert!(proxy.cuts.borrow().is_empty());
        assert_eq!(read_exact(&mut server, 1).await, b"x");
        assert_eq!(read_exact(&mut client, 1).await, b"y");
    }

    #[tokio::test]
    async fn a_connection_from_another_process_is_never_cut() {
        let (proxy, listen, upstream) = proxy_for_node_2(NodePids::new()).await;
        proxy.cut(&[(1, 2), (2, 1), (3, 2)]);
        let (mut client, mut server) = connect(listen, &upstream).await;
        client.write_all(b"tool").await.unwrap();
        assert_eq!(read_exact(&mut server, 4).await, b"tool");
    }

    #[tokio::test]
    async fn identifies_the_child_process_holding_the_connection() {
        let listener = TcpListener::bind(loopback(0)).await.unwrap();
        let listen = listener.local_addr().unwrap();
        // A child holds a connection open (bash's /dev/tcp) until we close our end.
        let mut child = tokio::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "exec 3<>/dev/tcp/127.0.0.1/{}; read -r _ <&3",
                listen.port()
            ))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let (conn, peer) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .unwrap()
            .unwrap();
        let pid = child.id().unwrap();
        let pids = NodePids::from([(1, std::process::id()), (3, pid)]);
        assert_eq!(source_node(peer, listen, &pids), Some(3));
        // Not a node: nobody.
        assert_eq!(source_node(peer, listen, &NodePids::from([(1, 1)])), None);
        // Our own connection is node 1's.
        let ours = TcpStream::connect(listen).await.unwrap();
        let (_theirs, our_peer) = listener.accept().await.unwrap();
        assert_eq!(ours.local_addr().unwrap(), our_peer);
        assert_eq!(source_node(our_peer, listen, &pids), Some(1));
        drop(conn);
        let _ = tokio::time::timeout(WAIT, child.wait()).await;
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn parses_the_kernel_address_format() {
        assert_eq!(parse_proc_addr("0100007F:1F90"), Some(loopback(8080)));
        // ::ffff:127.0.0.1, as a dual-stack socket connected to 127.0.0.1 shows it.
        assert_eq!(
            parse_proc_addr("0000000000000000FFFF00000100007F:0050"),
            Some(loopback(80))
        );
        assert_eq!(parse_proc_addr("zz:1"), None);
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                     \x20  0: 0100007F:1F90 0100007F:0050 01 00000000:00000000 00:00000000 00000000  1000        0 4242 1\n";
        assert_eq!(
            socket_inode(table, loopback(8080), loopback(80)),
            Some(4242)
        );
        assert_eq!(socket_inode(table, loopback(80), loopback(8080)), None);
    }
}
