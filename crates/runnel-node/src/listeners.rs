//! Named Kafka listeners, as Kafka's `listeners` and `advertised.listeners` (KIP-103): a node
//! can be reached under several addresses (containers by name, the host through a published
//! port), and each client is told the addresses of the listener it connected through.
//!
//! `--kafka-listen` takes `NAME://host:port` entries or one plain `host:port` (the listener
//! named `PLAINTEXT`); `--advertised-kafka` entries are matched to listeners by name.

use std::net::SocketAddr;

use anyhow::{bail, Context as _};

/// The name of a listener given without one, as in Kafka.
pub(crate) const DEFAULT_LISTENER: &str = "PLAINTEXT";

/// One listener to bind, and what clients connected through it are told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListenerSpec {
    pub(crate) name: String,
    pub(crate) bind: SocketAddr,
    /// `None`: advertise the bound address.
    pub(crate) advertised: Option<(String, i32)>,
}

/// Pairs `--kafka-listen` with `--advertised-kafka`.
pub(crate) fn parse(listen: &[String], advertised: &[String]) -> anyhow::Result<Vec<ListenerSpec>> {
    let listen: Vec<&str> = listen
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    if listen.is_empty() {
        bail!("--kafka-listen names no listener");
    }
    let mut specs: Vec<ListenerSpec> = Vec::with_capacity(listen.len());
    for entry in &listen {
        let (name, addr) = split_name(entry, "--kafka-listen")?;
        let bind: SocketAddr = addr.parse().with_context(|| {
            format!("--kafka-listen '{entry}': '{addr}' is not an ip:port address to bind")
        })?;
        if specs.iter().any(|s| s.name == name) {
            bail!("--kafka-listen names the listener {name} twice");
        }
        specs.push(ListenerSpec {
            name,
            bind,
            advertised: None,
        });
    }
    for entry in advertised
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        let named = entry.contains("://");
        let (name, addr) = split_name(entry, "--advertised-kafka")?;
        if !named && specs.len() > 1 {
            bail!(
                "--advertised-kafka '{entry}' has no listener name, but there are {} listeners; \
                 write NAME://host:port",
                specs.len()
            );
        }
        let spec = if named {
            specs.iter_mut().find(|s| s.name == name)
        } else {
            specs.first_mut()
        };
        let Some(spec) = spec else {
            let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            bail!(
                "--advertised-kafka '{entry}' names the listener {name}, but --kafka-listen has \
                 only {}",
                names.join(", ")
            );
        };
        if spec.advertised.is_some() {
            bail!("--advertised-kafka gives the listener {} twice", spec.name);
        }
        spec.advertised = Some(parse_host_port(addr, entry)?);
    }
    Ok(specs)
}

/// `NAME://rest` as (upper-case NAME, rest); a plain address is the default listener.
fn split_name<'a>(entry: &'a str, flag: &str) -> anyhow::Result<(String, &'a str)> {
    let Some((name, rest)) = entry.split_once("://") else {
        return Ok((DEFAULT_LISTENER.to_owned(), entry));
    };
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        bail!("{flag} '{entry}': a listener name is letters, digits, '_' and '-'");
    }
    Ok((name.to_ascii_uppercase(), rest))
}

/// Splits `host:port` (IPv6 hosts in brackets) for what Metadata advertises.
fn parse_host_port(addr: &str, entry: &str) -> anyhow::Result<(String, i32)> {
    let (host, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("--advertised-kafka '{entry}' is not host:port"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("--advertised-kafka '{entry}' has an invalid port"))?;
    let host = host.trim_matches(['[', ']']);
    if host.is_empty() || port == 0 {
        bail!("--advertised-kafka '{entry}' needs a host and a port above 0");
    }
    Ok((host.to_string(), i32::from(port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn parsed(listen: &[&str], advertised: &[&str]) -> anyhow::Result<Vec<ListenerSpec>> {
        parse(&strings(listen), &strings(advertised))
    }

    #[test]
    fn one_plain_listener_is_plaintext() {
        let specs = parsed(&["127.0.0.1:9092"], &["kafka-1:19092"]).unwrap();
        assert_eq!(
            specs,
            [ListenerSpec {
                name: "PLAINTEXT".into(),
                bind: "127.0.0.1:9092".parse().unwrap(),
                advertised: Some(("kafka-1".into(), 19092)),
            }]
        );
        let v6 = parsed(&["[::1]:9092"], &["[::1]:9092"]).unwrap();
        assert_eq!(v6[0].advertised, Some(("::1".into(), 9092)));
        assert_eq!(
            parsed(&["127.0.0.1:9092"], &[]).unwrap()[0].advertised,
            None
        );
    }

    #[test]
    fn named_listeners_are_matched_by_name() {
        let specs = parsed(
            &["internal://0.0.0.0:9092", "EXTERNAL://0.0.0.0:9094"],
            &["EXTERNAL://127.0.0.1:19092", "INTERNAL://runnel-1:9092"],
        )
        .unwrap();
        let names: Vec<_> = specs
            .iter()
            .map(|s| (s.name.as_str(), s.bind.port()))
            .collect();
        assert_eq!(names, [("INTERNAL", 9092), ("EXTERNAL", 9094)]);
        assert_eq!(specs[0].advertised, Some(("runnel-1".into(), 9092)));
        assert_eq!(specs[1].advertised, Some(("127.0.0.1".into(), 19092)));
        // A listener without an advertised entry advertises its bind address.
        let specs = parsed(&["A://127.0.0.1:1", "B://127.0.0.1:2"], &["B://h:3"]).unwrap();
        assert_eq!(specs[0].advertised, None);
    }

    #[test]
    fn bad_listeners_are_explained() {
        let cases: &[(&[&str], &[&str], &str)] = &[
            (&[], &[], "names no listener"),
            (&["localhost:9092"], &[], "not an ip:port"),
            (&["A://127.0.0.1:1", "a://127.0.0.1:2"], &[], "twice"),
            (&["A B://127.0.0.1:1"], &[], "listener name"),
            (
                &["A://127.0.0.1:1", "B://127.0.0.1:2"],
                &["h:1"],
                "no listener name",
            ),
            (&["A://127.0.0.1:1"], &["C://h:1"], "only A"),
            (&["A://127.0.0.1:1"], &["A://h:1", "A://h:2"], "twice"),
            (&["127.0.0.1:1"], &["nohost"], "not host:port"),
            (&["127.0.0.1:1"], &["h:99999"], "invalid port"),
            (&["127.0.0.1:1"], &[":9092"], "needs a host"),
        ];
        for (listen, advertised, why) in cases {
            let err = parsed(listen, advertised).unwrap_err().to_string();
            assert!(err.contains(why), "{listen:?} {advertised:?}: {err}");
        }
    }
}
