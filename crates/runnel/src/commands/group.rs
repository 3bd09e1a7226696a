//! `runnel group ...`: list, describe, reset the offsets of and delete consumer groups, over
//! the Kafka protocol (like `kafka-consumer-groups.sh` or `rpk group`). Every request goes to
//! the group's coordinator, found with FindCoordinator.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{anyhow, bail};
use runnel_client::{
    offset_spec, Client, CommittedOffset, Error, GroupDescription, GroupMember, ResponseError,
};

use super::table::Table;
use super::{emit, explain, outln, ConnectArgs};

/// Group states as Kafka spells them (ListGroups' state filter, DescribeGroups' state).
const STATES: [&str; 5] = [
    "Empty",
    "PreparingRebalance",
    "CompletingRebalance",
    "Stable",
    "Dead",
];

#[derive(clap::Subcommand)]
pub(crate) enum GroupCommand {
    /// List consumer groups.
    List(ListArgs),
    /// Show a group's state, members, committed offsets and lag.
    Describe(DescribeArgs),
    /// Reset a group's committed offsets (a dry run unless --execute; the group must have no
    /// active members).
    ResetOffsets(ResetArgs),
    /// Delete consumer groups and their committed offsets (only groups without members).
    Delete(DeleteArgs),
}

#[derive(clap::Args)]
pub(crate) struct ListArgs {
    /// Only groups in these states (Empty, PreparingRebalance, CompletingRebalance, Stable,
    /// Dead; case-insensitive); repeat or separate with commas.
    #[arg(long, value_name = "STATE", value_delimiter = ',', value_parser = parse_state)]
    state: Vec<String>,
    #[command(flatten)]
    conn: ConnectArgs,
}

#[derive(clap::Args)]
pub(crate) struct DescribeArgs {
    /// Group id.
    group: String,
    /// List the members and their assignments instead of per-partition offsets and lag.
    #[arg(long)]
    members: bool,
    #[command(flatten)]
    conn: ConnectArgs,
}

#[derive(clap::Args)]
#[command(group(
    clap::ArgGroup::new("strategy")
        .required(true)
        .args(["to_earliest", "to_latest", "to_offset", "shift_by", "to_datetime"]),
))]
#[command(group(
    clap::ArgGroup::new("scope")
        .required(true)
        .multiple(false)
        .args(["topic", "all_topics"]),
))]
pub(crate) struct ResetArgs {
    /// Group id.
    group: String,
    /// A topic (all its partitions) or TOPIC:P,P,... (those partitions); repeat for several.
    #[arg(long, value_name = "TOPIC[:P,P...]", value_parser = parse_topic_spec)]
    topic: Vec<TopicSpec>,
    /// Every partition the group has committed offsets for.
    #[arg(long)]
    all_topics: bool,
    /// Reset to the earliest offset still in the log.
    #[arg(long)]
    to_earliest: bool,
    /// Reset to the log end (skip everything not read yet).
    #[arg(long)]
    to_latest: bool,
    /// Reset to this offset (clamped to the partition's earliest..log end).
    #[arg(long, value_name = "N")]
    to_offset: Option<i64>,
    /// Move the committed offset by N (negative moves back), clamped to earliest..log end.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    shift_by: Option<i64>,
    /// Reset to the first offset at or after a time: RFC 3339 (2024-05-01T12:00:00Z,
    /// 2024-05-01T14:00:00.5+02:00; no offset means UTC) or milliseconds since the epoch.
    #[arg(long, value_name = "DATETIME", value_parser = parse_datetime)]
    to_datetime: Option<i64>,
    /// Commit the new offsets (without it, only print the plan).
    #[arg(long)]
    execute: bool,
    #[command(flatten)]
    conn: ConnectArgs,
}

#[derive(clap::Args)]
pub(crate) struct DeleteArgs {
    /// Group ids.
    #[arg(required = true, value_name = "GROUP")]
    groups: Vec<String>,
    #[command(flatten)]
    conn: ConnectArgs,
}

pub(crate) async fn run(cmd: GroupCommand) -> anyhow::Result<()> {
    match cmd {
        GroupCommand::List(args) => list(args).await,
        GroupCommand::Describe(args) => describe(args).await,
        GroupCommand::ResetOffsets(args) => reset_offsets(args).await,
        GroupCommand::Delete(args) => delete(args).await,
    }
}

// -------------------------------------------------------------------- errors

/// Like [`explain`], with next steps for group errors.
fn explain_group(err: Error) -> anyhow::Error {
    let Error::Group { error, group, .. } = &err else {
        return explain(err);
    };
    let hint = match error {
        ResponseError::GroupIdNotFound => "list groups with `runnel group list`".to_owned(),
        ResponseError::NonEmptyGroup => format!(
            "stop the consumers of group {group} first (see them with \
             `runnel group describe {group} --members`)"
        ),
        ResponseError::UnknownMemberId
        | ResponseError::RebalanceInProgress
        | ResponseError::IllegalGeneration
        | ResponseError::FencedInstanceId => {
            format!("the group has active members: stop the consumers of group {group} first")
        }
        ResponseError::CoordinatorNotAvailable
        | ResponseError::CoordinatorLoadInProgress
        | ResponseError::NotCoordinator => {
            "the cluster may still be starting up or moving the group; retry in a moment".to_owned()
        }
        ResponseError::InvalidGroupId => "group ids must not be empty".to_owned(),
        _ => return explain(err),
    };
    anyhow!("{err} — {hint}")
}

fn not_found(group: &str) -> anyhow::Error {
    anyhow!("consumer group '{group}' does not exist — list groups with `runnel group list`")
}

/// Describes `group`; `None` when the coordinator does not know it (GROUP_ID_NOT_FOUND, or
/// the `Dead` state older brokers report for unknown groups).
async fn describe_if_exists(
    client: &mut Client,
    group: &str,
) -> anyhow::Result<Option<GroupDescription>> {
    match client.describe_group(group).await {
        Ok(d) if d.state == "Dead" => Ok(None),
        Ok(d) => Ok(Some(d)),
        Err(e) if e.kafka_error() == Some(ResponseError::GroupIdNotFound) => Ok(None),
        Err(e) => Err(explain_group(e)),
    }
}

// -------------------------------------------------------------------- list

fn parse_state(s: &str) -> Result<String, String> {
    let wanted: String = s.chars().filter(|c| *c != '-' && *c != '_').collect();
    STATES
        .iter()
        .find(|st| st.eq_ignore_ascii_case(&wanted))
        .map(|st| (*st).to_owned())
        .ok_or_else(|| format!("unknown group state '{s}' (one of: {})", STATES.join(", ")))
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let mut client = args.conn.connect().await?;
    let groups = client
        .list_groups(&args.state)
        .await
        .map_err(explain_group)?;
    let mut table = Table::new(["GROUP", "STATE", "PROTOCOL-TYPE"]);
    for g in &groups {
        // Brokers apply the filter; do it again in case one ignored it.
        if !args.state.is_empty()
            && !g
                .state
                .as_ref()
                .is_some_and(|s| args.state.iter().any(|w| w.eq_ignore_ascii_case(s)))
        {
            continue;
        }
        table.row([
            g.group_id.clone(),
            g.state.clone().unwrap_or_else(|| "-".to_owned()),
            dash_if_empty(&g.protocol_type),
        ]);
    }
    if table.is_empty() {
        if args.state.is_empty() {
            eprintln!("no consumer groups");
        } else {
            eprintln!("no consumer groups in state {}", args.state.join(" or "));
        }
        return Ok(());
    }
    emit(&table.render());
    Ok(())
}

fn dash_if_empty(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}

// -------------------------------------------------------------------- describe

/// One row of `group describe`: a partition (committed and/or assigned) or a member without
/// partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LagRow {
    topic: Option<String>,
    partition: Option<i32>,
    committed: Option<i64>,
    log_end: Option<i64>,
    member: Option<MemberRef>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MemberRef {
    member_id: String,
    host: String,
    client_id: String,
}

impl From<&GroupMember> for MemberRef {
    fn from(m: &GroupMember) -> Self {
        Self {
            member_id: m.member_id.clone(),
            host: m.client_host.clone(),
            client_id: m.client_id.clone(),
        }
    }
}

/// The partitions each member owns, from the consumer protocol assignment bytes. Members
/// whose assignment cannot be decoded (another protocol type) own nothing here.
fn assignments(desc: &GroupDescription) -> Vec<(&GroupMember, Vec<(String, i32)>)> {
    desc.members
        .iter()
        .map(|m| {
            let parts = if desc.protocol_type == "consumer" || desc.protocol_type.is_empty() {
                match m.consumer_assignment() {
                    Ok(a) => a
                        .into_iter()
                        .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
                        .collect(),
                    Err(e) => {
                        tracing::warn!(member = %m.member_id, error = %e, "cannot decode assignment");
                        Vec::new()
                    }
                }
            } else {
                Vec::new()
            };
            (m, parts)
        })
        .collect()
}

/// Joins committed offsets, assignments and log end offsets into rows sorted by topic and
/// partition; members with no partitions come last.
fn lag_rows(
    desc: Option<&GroupDescription>,
    committed: &[CommittedOffset],
    log_ends: &BTreeMap<(String, i32), i64>,
) -> Vec<LagRow> {
    let mut rows: BTreeMap<(String, i32), LagRow> = BTreeMap::new();
    let mut idle = Vec::new();
    for c in committed {
        rows.insert(
            (c.topic.clone(), c.partition),
            LagRow {
                topic: Some(c.topic.clone()),
                partition: Some(c.partition),
                committed: Some(c.offset),
                log_end: None,
                member: None,
            },
        );
    }
    if let Some(desc) = desc {
        for (m, parts) in assignments(desc) {
            if parts.is_empty() {
                idle.push(LagRow {
                    topic: None,
                    partition: None,
                    committed: None,
                    log_end: None,
                    member: Some(m.into()),
                });
            }
            for (t, p) in parts {
                let row = rows.entry((t.clone(), p)).or_insert_with(|| LagRow {
                    topic: Some(t.clone()),
                    partition: Some(p),
                    committed: None,
                    log_end: None,
                    member: None,
                });
                row.member = Some(m.into());
            }
        }
    }
    let mut out: Vec<LagRow> = rows
        .into_iter()
        .map(|(key, mut row)| {
            row.log_end = log_ends.get(&key).copied();
            row
        })
        .collect();
    out.extend(idle);
    out
}

fn lag_table(rows: &[LagRow]) -> Table {
    let mut table = Table::new([
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
        "HOST",
        "CLIENT-ID",
    ])
    .right(&[1, 2, 3, 4]);
    let opt = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    for r in rows {
        let lag = match (r.committed, r.log_end) {
            (Some(c), Some(e)) => Some((e - c).max(0)),
            _ => None,
        };
        let (member, host, client) = match &r.member {
            Some(m) => (
                dash_if_empty(&m.member_id),
                dash_if_empty(&m.host),
                dash_if_empty(&m.client_id),
            ),
            None => ("-".to_owned(), "-".to_owned(), "-".to_owned()),
        };
        table.row([
            r.topic.clone().unwrap_or_else(|| "-".to_owned()),
            r.partition
                .map_or_else(|| "-".to_owned(), |p| p.to_string()),
            opt(r.committed),
            opt(r.log_end),
            opt(lag),
            member,
            host,
            client,
        ]);
    }
    table
}

fn members_table(desc: &GroupDescription) -> Table {
    let mut table = Table::new([
        "CONSUMER-ID",
        "GROUP-INSTANCE-ID",
        "HOST",
        "CLIENT-ID",
        "#PARTITIONS",
        "ASSIGNMENT",
    ])
    .right(&[4]);
    for (m, parts) in assignments(desc) {
        let mut by_topic: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (t, p) in &parts {
            by_topic.entry(t).or_default().push(p.to_string());
        }
        let assignment = if by_topic.is_empty() {
            "-".to_owned()
        } else {
            by_topic
                .iter()
                .map(|(t, ps)| format!("{t}({})", ps.join(",")))
                .collect::<Vec<_>>()
                .join(" ")
        };
        table.row([
            dash_if_empty(&m.member_id),
            m.group_instance_id
                .clone()
                .unwrap_or_else(|| "-".to_owned()),
            dash_if_empty(&m.client_host),
            dash_if_empty(&m.client_id),
            parts.len().to_string(),
            assignment,
        ]);
    }
    table
}

fn summary(desc: Option<&GroupDescription>, group: &str, coordinator: &str) -> String {
    let mut t = Table::new(["", ""]);
    t.row(["Group:", group]);
    match desc {
        Some(d) => {
            let state = if d.state == "Empty" {
                "Empty (no active members)".to_owned()
            } else {
                d.state.clone()
            };
            t.row(["State:".to_owned(), state]);
            let protocol = match (d.protocol_type.is_empty(), d.protocol.is_empty()) {
                (true, _) => "-".to_owned(),
                (false, true) => d.protocol_type.clone(),
                (false, false) => format!("{} ({})", d.protocol_type, d.protocol),
            };
            t.row(["Protocol:".to_owned(), protocol]);
            t.row(["Coordinator:", coordinator]);
            t.row(["Members:".to_owned(), d.members.len().to_string()]);
        }
        None => {
            t.row(["State:", "Empty (no active members)"]);
            t.row(["Coordinator:", coordinator]);
            t.row(["Members:", "0"]);
        }
    }
    let rendered = t.render();
    rendered
        .split_once('\n')
        .map_or("", |(_, rest)| rest)
        .to_owned()
}

async fn describe(args: DescribeArgs) -> anyhow::Result<()> {
    let mut client = args.conn.connect().await?;
    let group = args.group.as_str();
    let coordinator = client
        .find_coordinator(group)
        .await
        .map_err(explain_group)?;
    let coordinator = format!("{} ({})", coordinator.node_id, coordinator.addr());
    let desc = describe_if_exists(&mut client, group).await?;
    let committed = client
        .committed_offsets(group, None)
        .await
        .map_err(explain_group)?;
    if desc.is_none() && committed.is_empty() {
        return Err(not_found(group));
    }
    emit(&summary(desc.as_ref(), group, &coordinator));
    outln!();

    if args.members {
        match &desc {
            Some(d) if !d.members.is_empty() => emit(&members_table(d).render()),
            _ => eprintln!("consumer group '{group}' has no active members"),
        }
        return Ok(());
    }

    let rows = lag_rows(desc.as_ref(), &committed, &BTreeMap::new());
    let mut log_ends = BTreeMap::new();
    for r in &rows {
        if let (Some(t), Some(p)) = (&r.topic, r.partition) {
            match client.list_offsets(t, p, offset_spec::LATEST).await {
                Ok(o) => {
                    log_ends.insert((t.clone(), p), o);
                }
                Err(e) => {
                    tracing::warn!(topic = %t, partition = p, error = %e, "cannot list the log end offset")
                }
            }
        }
    }
    let rows = lag_rows(desc.as_ref(), &committed, &log_ends);
    if rows.is_empty() {
        eprintln!("consumer group '{group}' has no committed offsets and no assigned partitions");
        return Ok(());
    }
    emit(&lag_table(&rows).render());
    Ok(())
}

// -------------------------------------------------------------------- reset-offsets

/// `TOPIC` or `TOPIC:P,P,...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TopicSpec {
    topic: String,
    partitions: Option<Vec<i32>>,
}

fn parse_topic_spec(s: &str) -> Result<TopicSpec, String> {
    let (topic, parts) = match s.rsplit_once(':') {
        Some((t, ps)) => (t, Some(ps)),
        None => (s, None),
    };
    if topic.is_empty() {
        return Err(format!("expected TOPIC or TOPIC:P,P,..., got '{s}'"));
    }
    let partitions = match parts {
        None => None,
        Some(ps) => {
            let mut v = ps
                .split(',')
                .map(|p| match p.trim().parse::<i32>() {
                    Ok(n) if n >= 0 => Ok(n),
                    _ => Err(format!(
                        "'{p}' in '{s}' is not a partition number (expected TOPIC:P,P,...)"
                    )),
                })
                .collect::<Result<Vec<i32>, String>>()?;
            v.sort_unstable();
            v.dedup();
            Some(v)
        }
    };
    Ok(TopicSpec {
        topic: topic.to_owned(),
        partitions,
    })
}

/// Milliseconds since the epoch, or an RFC 3339 date-time (`T` or a space between date and
/// time, optional fraction, `Z` / `±HH:MM` / nothing for UTC).
fn parse_datetime(s: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "'{s}' is not a date-time: expected RFC 3339 like 2024-05-01T12:00:00Z or \
             2024-05-01T14:00:00.250+02:00, or milliseconds since the epoch"
        )
    };
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<i64>().map_err(|_| bad());
    }
    // RFC 3339 requires an offset; a date-time without one is taken as UTC.
    chrono::DateTime::parse_from_rfc3339(s)
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(&format!("{s}Z")))
        .map(|t| t.timestamp_millis())
        .map_err(|_| bad())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Strategy {
    Earliest,
    Latest,
    Offset(i64),
    ShiftBy(i64),
    Datetime(i64),
}

impl ResetArgs {
    fn strategy(&self) -> Strategy {
        if self.to_earliest {
            Strategy::Earliest
        } else if self.to_latest {
            Strategy::Latest
        } else if let Some(o) = self.to_offset {
            Strategy::Offset(o)
        } else if let Some(n) = self.shift_by {
            Strategy::ShiftBy(n)
        } else if let Some(ts) = self.to_datetime {
            Strategy::Datetime(ts)
        } else {
            unreachable!("clap requires one strategy")
        }
    }
}

/// The new offset of one partition. `at_time` is ListOffsets' answer for the datetime
/// strategy (-1 when no record is that recent).
fn new_offset(
    strategy: Strategy,
    current: Option<i64>,
    earliest: i64,
    latest: i64,
    at_time: Option<i64>,
) -> Result<i64, String> {
    let clamp = |o: i64| o.clamp(earliest, latest.max(earliest));
    Ok(match strategy {
        Strategy::Earliest => earliest,
        Strategy::Latest => latest,
        Strategy::Offset(o) => clamp(o),
        Strategy::ShiftBy(n) => match current {
            Some(c) => clamp(c.saturating_add(n)),
            None => {
                return Err("has no committed offset to shift from (use --to-offset, \
                            --to-earliest or --to-latest)"
                    .to_owned())
            }
        },
        Strategy::Datetime(_) => match at_time {
            Some(o) if o >= 0 => clamp(o),
            _ => latest,
        },
    })
}

async fn reset_offsets(args: ResetArgs) -> anyhow::Result<()> {
    if args.to_offset.is_some_and(|o| o < 0) {
        bail!("--to-offset must not be negative");
    }
    let strategy = args.strategy();
    let group = args.group.as_str();
    let mut client = args.conn.connect().await?;

    let desc = describe_if_exists(&mut client, group).await?;
    if let Some(d) = desc.as_ref().filter(|d| d.state != "Empty") {
        let msg = format!(
            "consumer group '{group}' is {} with {} member(s): its offsets can only be reset \
             while it has no active members — stop the consumers of group {group} first",
            d.state,
            d.members.len()
        );
        if args.execute {
            bail!(msg);
        }
        eprintln!("warning: {msg}");
    }
    let committed = client
        .committed_offsets(group, None)
        .await
        .map_err(explain_group)?;
    let current: BTreeMap<(String, i32), i64> = committed
        .iter()
        .map(|c| ((c.topic.clone(), c.partition), c.offset))
        .collect();

    // Which partitions.
    let mut targets: BTreeSet<(String, i32)> = BTreeSet::new();
    if args.all_topics {
        if committed.is_empty() {
            bail!(
                "consumer group '{group}' has no committed offsets; name the topics with --topic"
            );
        }
        targets.extend(current.keys().cloned());
    }
    for spec in &args.topic {
        let md = client.topic_metadata(&spec.topic).await.map_err(explain)?;
        let all: Vec<i32> = md.partitions.iter().map(|p| p.partition).collect();
        match &spec.partitions {
            None => targets.extend(all.iter().map(|&p| (spec.topic.clone(), p))),
            Some(ps) => {
                for &p in ps {
                    if !all.contains(&p) {
                        bail!(
                            "topic '{}' has no partition {p} (it has {} partitions) — see \
                             `runnel topic describe {}`",
                            spec.topic,
                            all.len(),
                            spec.topic
                        );
                    }
                    targets.insert((spec.topic.clone(), p));
                }
            }
        }
    }

    // The plan.
    let mut plan: Vec<(String, i32, Option<i64>, i64)> = Vec::with_capacity(targets.len());
    for (topic, p) in &targets {
        let earliest = client
            .list_offsets(topic, *p, offset_spec::EARLIEST)
            .await
            .map_err(explain)?;
        let latest = client
            .list_offsets(topic, *p, offset_spec::LATEST)
            .await
            .map_err(explain)?;
        let at_time = match strategy {
            Strategy::Datetime(ts) => {
                Some(client.list_offsets(topic, *p, ts).await.map_err(explain)?)
            }
            _ => None,
        };
        let cur = current.get(&(topic.clone(), *p)).copied();
        let new = new_offset(strategy, cur, earliest, latest, at_time)
            .map_err(|e| anyhow!("topic '{topic}' partition {p} {e}"))?;
        plan.push((topic.clone(), *p, cur, new));
    }
    let mut table =
        Table::new(["TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"]).right(&[1, 2, 3]);
    for (t, p, cur, new) in &plan {
        table.row([
            t.clone(),
            p.to_string(),
            cur.map_or_else(|| "-".to_owned(), |c| c.to_string()),
            new.to_string(),
        ]);
    }
    emit(&table.render());
    if !args.execute {
        eprintln!("dry run: no offsets were changed; add --execute to commit them");
        return Ok(());
    }

    let offsets: Vec<(String, i32, i64)> = plan
        .iter()
        .map(|(t, p, _, n)| (t.clone(), *p, *n))
        .collect();
    let results = client
        .commit_offsets(group, -1, "", &offsets)
        .await
        .map_err(|e| match e.kafka_error() {
            Some(
                ResponseError::UnknownMemberId
                | ResponseError::RebalanceInProgress
                | ResponseError::IllegalGeneration
                | ResponseError::NonEmptyGroup
                | ResponseError::FencedInstanceId,
            ) => anyhow!(
                "consumer group '{group}' has active members, so its offsets cannot be reset \
                 ({e}) — stop the consumers of group {group} first"
            ),
            _ => explain_group(e),
        })?;
    let mut failed = 0;
    for ((t, p), r) in &results {
        if let Err(e) = r {
            failed += 1;
            eprintln!("error: cannot commit topic '{t}' partition {p}: {e}");
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} offsets could not be committed",
            results.len()
        );
    }
    outln!(
        "committed {} new offset(s) for consumer group '{group}'",
        results.len()
    );
    Ok(())
}

// -------------------------------------------------------------------- delete

async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let mut client = args.conn.connect().await?;
    let results = client
        .delete_groups(&args.groups)
        .await
        .map_err(explain_group)?;
    let mut failed = 0;
    for (group, result) in results {
        match result {
            Ok(()) => outln!("deleted consumer group '{group}'"),
            Err(e) => {
                failed += 1;
                eprintln!("error: {:#}", explain_group(e));
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} groups could not be deleted",
            args.groups.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, Bytes, BytesMut};
    use runnel_client::BrokerMetadata;

    /// A v0 consumer assignment, encoded by hand as the Java client and librdkafka do.
    fn assignment(topics: &[(&str, &[i32])]) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(0);
        b.put_i32(topics.len() as i32);
        for (t, ps) in topics {
            b.put_i16(t.len() as i16);
            b.put_slice(t.as_bytes());
            b.put_i32(ps.len() as i32);
            for p in *ps {
                b.put_i32(*p);
            }
        }
        b.put_i32(-1);
        b.freeze()
    }

    fn member(id: &str, topics: &[(&str, &[i32])]) -> GroupMember {
        GroupMember {
            member_id: id.to_owned(),
            group_instance_id: None,
            client_id: format!("client-{id}"),
            client_host: "/127.0.0.1".to_owned(),
            metadata: Bytes::new(),
            assignment: assignment(topics),
        }
    }

    fn group(members: Vec<GroupMember>) -> GroupDescription {
        GroupDescription {
            group_id: "g".to_owned(),
            state: "Stable".to_owned(),
            protocol_type: "consumer".to_owned(),
            protocol: "range".to_owned(),
            members,
            coordinator: BrokerMetadata {
                node_id: 1,
                host: "127.0.0.1".to_owned(),
                port: 9092,
                rack: None,
            },
        }
    }

    fn committed(topic: &str, partition: i32, offset: i64) -> CommittedOffset {
        CommittedOffset {
            topic: topic.to_owned(),
            partition,
            offset,
            leader_epoch: -1,
            metadata: None,
        }
    }

    #[test]
    fn describe_table_joins_offsets_members_and_lag() {
        let desc = group(vec![
            member("m1", &[("orders", &[0, 1])]),
            member("m2", &[("orders", &[2])]),
            member("m3", &[]),
        ]);
        let committed = vec![
            committed("orders", 0, 5),
            committed("orders", 2, 7),
            committed("old", 0, 3),
        ];
        let ends: BTreeMap<(String, i32), i64> = [
            (("orders".to_owned(), 0), 10),
            (("orders".to_owned(), 1), 4),
            (("orders".to_owned(), 2), 7),
            (("old".to_owned(), 0), 3),
        ]
        .into_iter()
        .collect();
        let rows = lag_rows(Some(&desc), &committed, &ends);
        assert_eq!(
            lag_table(&rows).render(),
            "\
TOPIC   PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG  CONSUMER-ID  HOST        CLIENT-ID
old             0               3               3    0  -            -           -
orders          0               5              10    5  m1           /127.0.0.1  client-m1
orders          1               -               4    -  m1           /127.0.0.1  client-m1
orders          2               7               7    0  m2           /127.0.0.1  client-m2
-               -               -               -    -  m3           /127.0.0.1  client-m3
"
        );
    }

    #[test]
    fn describe_table_without_members_or_log_end() {
        let rows = lag_rows(None, &[committed("t", 1, 2)], &BTreeMap::new());
        assert_eq!(
            lag_table(&rows).render(),
            "\
TOPIC  PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG  CONSUMER-ID  HOST  CLIENT-ID
t              1               2               -    -  -            -     -
"
        );
    }

    #[test]
    fn members_table_lists_assignments() {
        let mut m1 = member("m1", &[("b", &[1]), ("a", &[2, 0])]);
        m1.group_instance_id = Some("static-1".to_owned());
        let desc = group(vec![m1, member("m2", &[])]);
        assert_eq!(
            members_table(&desc).render(),
            "\
CONSUMER-ID  GROUP-INSTANCE-ID  HOST        CLIENT-ID  #PARTITIONS  ASSIGNMENT
m1           static-1           /127.0.0.1  client-m1            3  a(0,2) b(1)
m2           -                  /127.0.0.1  client-m2            0  -
"
        );
    }

    #[test]
    fn summary_lines() {
        let desc = group(vec![member("m1", &[])]);
        assert_eq!(
            summary(Some(&desc), "g", "1 (127.0.0.1:9092)"),
            "\
Group:        g
State:        Stable
Protocol:     consumer (range)
Coordinator:  1 (127.0.0.1:9092)
Members:      1
"
        );
    }

    #[test]
    fn topic_specs() {
        assert_eq!(
            parse_topic_spec("orders").unwrap(),
            TopicSpec {
                topic: "orders".into(),
                partitions: None
            }
        );
        assert_eq!(
            parse_topic_spec("orders:2,0,2").unwrap(),
            TopicSpec {
                topic: "orders".into(),
                partitions: Some(vec![0, 2])
            }
        );
        assert!(parse_topic_spec("orders:").is_err());
        assert!(parse_topic_spec("orders:x").is_err());
        assert!(parse_topic_spec(":1").is_err());
        assert!(parse_topic_spec("orders:-1").is_err());
    }

    #[test]
    fn states_parse_case_insensitively() {
        assert_eq!(parse_state("stable").unwrap(), "Stable");
        assert_eq!(
            parse_state("preparing-rebalance").unwrap(),
            "PreparingRebalance"
        );
        assert_eq!(parse_state("EMPTY").unwrap(), "Empty");
        assert!(parse_state("running").is_err());
    }

    #[test]
    fn datetimes() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(parse_datetime("1700000000123").unwrap(), 1_700_000_000_123);
        // 2024-05-01T12:00:00Z = 1714564800 s.
        assert_eq!(
            parse_datetime("2024-05-01T12:00:00Z").unwrap(),
            1_714_564_800_000
        );
        assert_eq!(
            parse_datetime("2024-05-01T14:00:00.25+02:00").unwrap(),
            1_714_564_800_250
        );
        assert_eq!(
            parse_datetime("2024-05-01 07:30:00-04:30").unwrap(),
            1_714_564_800_000
        );
        assert_eq!(
            parse_datetime("2024-05-01T12:00:00").unwrap(),
            1_714_564_800_000
        );
        assert_eq!(
            parse_datetime("2024-02-29T00:00:00Z").unwrap(),
            1_709_164_800_000
        );
        assert_eq!(
            parse_datetime(" 2024-05-01t12:00:00.2509z ").unwrap(),
            1_714_564_800_250
        );
        for bad in [
            "",
            "2024-02-30T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-05-01",
            "2024-05-01T25:00:00Z",
            "2024-05-01T12:00:00+2",
            "2024-05-01T12:00:00.Z",
            "yesterday",
        ] {
            assert!(parse_datetime(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn new_offsets() {
        use Strategy::*;
        assert_eq!(new_offset(Earliest, Some(5), 2, 10, None), Ok(2));
        assert_eq!(new_offset(Latest, None, 2, 10, None), Ok(10));
        assert_eq!(new_offset(Offset(7), None, 2, 10, None), Ok(7));
        assert_eq!(new_offset(Offset(0), None, 2, 10, None), Ok(2));
        assert_eq!(new_offset(Offset(99), None, 2, 10, None), Ok(10));
        assert_eq!(new_offset(ShiftBy(-3), Some(5), 0, 10, None), Ok(2));
        assert_eq!(new_offset(ShiftBy(-30), Some(5), 1, 10, None), Ok(1));
        assert_eq!(new_offset(ShiftBy(30), Some(5), 1, 10, None), Ok(10));
        assert!(new_offset(ShiftBy(1), None, 0, 10, None).is_err());
        assert_eq!(new_offset(Datetime(0), None, 0, 10, Some(4)), Ok(4));
        assert_eq!(new_offset(Datetime(0), None, 0, 10, Some(-1)), Ok(10));
    }
}
