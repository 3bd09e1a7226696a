//! The Kafka client of the commands that drive a cluster under faults (`chaos`,
//! `experiment`): short connect and request timeouts, and every connection attempt bounded,
//! so a dead or frozen node never stalls a run.

use std::time::Duration;

use anyhow::{bail, Context};
use runnel_client::{offset_spec, Client, ClientConfig};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one connection attempt (the client tries each bootstrap server in turn).
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects as `client_id`, giving up after [`ATTEMPT_TIMEOUT`].
pub(crate) async fn connect(bootstrap: &str, client_id: &str) -> anyhow::Result<Client> {
    let config = ClientConfig {
        client_id: client_id.to_owned(),
        connect_timeout: CONNECT_TIMEOUT,
        request_timeout: REQUEST_TIMEOUT,
        ..ClientConfig::default()
    };
    match tokio::time::timeout(
        ATTEMPT_TIMEOUT,
        Client::connect_with_config(bootstrap, config),
    )
    .await
    {
        Ok(r) => r.with_context(|| format!("cannot connect to {bootstrap}")),
        Err(_) => bail!("no broker of {bootstrap} answered within {ATTEMPT_TIMEOUT:?}"),
    }
}

/// Reads `partition` of `topic` from its start to its end offset at the time of the call and
/// returns what `parse` makes of each record value, in offset order (values it rejects, such
/// as those of another run, are skipped). Every request is bounded.
pub(crate) async fn read_partition(
    client: &mut Client,
    topic: &str,
    partition: i32,
    parse: impl Fn(&[u8]) -> Option<u64>,
) -> anyhow::Result<Vec<u64>> {
    let records = read_with_offsets(client, topic, partition, parse).await?;
    Ok(records.into_iter().map(|(_, v)| v).collect())
}

/// Like [`read_partition`], with the offset of each record.
pub(crate) async fn read_with_offsets<T>(
    client: &mut Client,
    topic: &str,
    partition: i32,
    parse: impl Fn(&[u8]) -> Option<T>,
) -> anyhow::Result<Vec<(i64, T)>> {
    let bounded = |what: &'static str| {
        move |_| anyhow::anyhow!("{what} of {topic}-{partition} took over {REQUEST_TIMEOUT:?}")
    };
    let end = tokio::time::timeout(
        REQUEST_TIMEOUT,
        client.list_offsets(topic, partition, offset_spec::LATEST),
    )
    .await
    .map_err(bounded("finding the end"))??;
    let mut offset = tokio::time::timeout(
        REQUEST_TIMEOUT,
        client.list_offsets(topic, partition, offset_spec::EARLIEST),
    )
    .await
    .map_err(bounded("finding the start"))??;
    let mut values = Vec::new();
    while offset < end {
        let records = tokio::time::timeout(
            ATTEMPT_TIMEOUT,
            client.fetch(topic, partition, offset, 500, 8 << 20),
        )
        .await
        .map_err(bounded("a fetch"))??;
        let Some(last) = records.last() else {
            bail!("{topic}-{partition} returned nothing at offset {offset} before its end {end}");
        };
        offset = last.offset + 1;
        values.extend(
            records
                .iter()
                .filter_map(|r| Some((r.offset, parse(r.value.as_deref()?)?))),
        );
    }
    Ok(values)
}
