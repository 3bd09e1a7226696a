//! Unit tests of the pure group state machine; time is explicit.

use super::*;
use bytes::{BufMut, BytesMut};

const SESSION: i32 = 10_000;
const REBALANCE: i32 = 30_000;

fn limits(delay: i64) -> GroupLimits {
    GroupLimits {
        min_session_timeout_ms: 6_000,
        max_session_timeout_ms: 300_000,
        max_size: 10,
        initial_rebalance_delay_ms: delay,
    }
}

/// ConsumerProtocolSubscription v0 for `topics`.
fn subscription(topics: &[&str]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(topics.len() as i32);
    for t in topics {
        b.put_i16(t.len() as i16);
        b.put_slice(t.as_bytes());
    }
    b.put_i32(-1);
    b.freeze()
}

fn req(member_id: &str) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_string(),
        group_instance_id: None,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION,
        rebalance_timeout_ms: REBALANCE,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), subscription(&["t"]))],
        require_known_member_id: false,
        supports_skip_assignment: false,
    }
}

fn static_req(member_id: &str, instance: &str) -> JoinRequest {
    JoinRequest {
        group_instance_id: Some(instance.to_string()),
        ..req(member_id)
    }
}

fn sync_req(member_id: &str, generation: i32, assignments: &[(&str, &str)]) -> SyncRequest {
    SyncRequest {
        member_id: member_id.to_string(),
        group_instance_id: None,
        generation_id: generation,
        protocol_type: None,
        protocol_name: None,
        assignments: assignments
            .iter()
            .map(|(m, a)| (m.to_string(), Bytes::copy_from_slice(a.as_bytes())))
            .collect(),
    }
}

fn only_join(fx: &Effects, waiter: WaiterId) -> JoinResult {
    let found: Vec<_> = fx.joins.iter().filter(|(w, _)| *w == waiter).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one join response for {waiter}: {fx:?}"
    );
    found[0].1.clone()
}

fn only_sync(fx: &Effects, waiter: WaiterId) -> SyncResult {
    let found: Vec<_> = fx.syncs.iter().filter(|(w, _)| *w == waiter).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one sync response for {waiter}: {fx:?}"
    );
    found[0].1.clone()
}

/// Writes every requested store successfully, as the coordinator does.
fn persist(group: &mut Group, mut fx: Effects, now: i64) -> Effects {
    let mut out = Effects::default();
    while !fx.stores.is_empty() {
        let stores = std::mem::take(&mut fx.stores);
        out.joins.append(&mut fx.joins);
        out.syncs.append(&mut fx.syncs);
        for s in stores {
            fx.extend(group.store_completed(s, Ok(()), now));
        }
    }
    out.extend(fx);
    out
}

fn persist_op(group: &mut Group, op: impl FnOnce(&mut Group) -> Effects, now: i64) -> Effects {
    let fx = op(group);
    persist(group, fx, now)
}

/// A group with one dynamic member `m1` in Stable at generation 1 (delay 0).
fn stable_one(now: i64) -> Group {
    let mut g = Group::new("g", limits(0), now);
    let fx = g.join(req(""), 1, "m1", now);
    let r = only_join(&fx, 1);
    assert_eq!(
        (r.error, r.generation_id, r.leader.as_str()),
        (None, 1, "m1")
    );
    let fx = persist_op(
        &mut g,
        |g| g.sync(sync_req("m1", 1, &[("m1", "a1")]), 2, now),
        now,
    );
    assert_eq!(only_sync(&fx, 2).assignment, Bytes::from_static(b"a1"));
    assert_eq!(g.state(), GroupState::Stable);
    g
}

/// Adds dynamic member `m2` to `stable_one` and completes the rebalance: generation 2.
fn stable_two(now: i64) -> Group {
    let mut g = stable_one(now);
    let fx = g.join(req(""), 10, "m2", now);
    assert!(fx.joins.is_empty(), "m2 waits for m1 to rejoin");
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    let fx = g.join(req("m1"), 11, "unused", now);
    let r1 = only_join(&fx, 11);
    let r2 = only_join(&fx, 10);
    assert_eq!(r1.generation_id, 2);
    assert_eq!(r1.members.len(), 2, "the leader gets everyone's metadata");
    assert!(r2.members.is_empty());
    assert_eq!(r2.leader, "m1");
    let fx = g.sync(sync_req("m2", 2, &[]), 12, now);
    assert!(fx.syncs.is_empty(), "the follower waits for the leader");
    let fx = persist_op(
        &mut g,
        |g| g.sync(sync_req("m1", 2, &[("m1", "a1"), ("m2", "a2")]), 13, now),
        now,
    );
    assert_eq!(only_sync(&fx, 12).assignment, Bytes::from_static(b"a2"));
    assert_eq!(only_sync(&fx, 13).assignment, Bytes::from_static(b"a1"));
    assert_eq!(g.state(), GroupState::Stable);
    g
}

#[test]
fn member_id_required_then_initial_delay_then_sync() {
    let mut g = Group::new("g", limits(3_000), 0);
    let fx = g.join(
        JoinRequest {
            require_known_member_id: true,
            ..req("")
        },
        1,
        "client-1",
        0,
    );
    let r = only_join(&fx, 1);
    assert_eq!(r.error, Some(ResponseError::MemberIdRequired));
    assert_eq!(r.member_id, "client-1");
    assert!(g.is_pending_member("client-1"));
    assert_eq!(g.state(), GroupState::Empty);

    let fx = g.join(req("client-1"), 2, "unused", 100);
    assert!(fx.joins.is_empty());
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert!(!g.is_pending_member("client-1"));
    // The initial delay holds the first rebalance back.
    assert!(g.poll(3_099).joins.is_empty());
    let fx = g.poll(3_100);
    let r = only_join(&fx, 2);
    assert_eq!(r.error, None);
    assert_eq!(r.generation_id, 1);
    assert_eq!(r.leader, "client-1");
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
    assert_eq!(r.protocol_type.as_deref(), Some("consumer"));
    assert_eq!(g.state(), GroupState::CompletingRebalance);

    let fx = g.sync(sync_req("client-1", 1, &[("client-1", "x")]), 3, 3_200);
    assert!(
        fx.syncs.is_empty(),
        "answered once the assignment is stored"
    );
    assert_eq!(
        fx.stores,
        vec![PendingStore::Assignment {
            generation: 1,
            assignment: [("client-1".to_string(), Bytes::from_static(b"x"))].into()
        }]
    );
    let value = g.metadata_value(&fx.stores[0]);
    assert_eq!(value.members[0].assignment, Bytes::from_static(b"x"));
    let store = fx.stores.into_iter().next().unwrap();
    let fx = g.store_completed(store, Ok(()), 3_200);
    assert_eq!(only_sync(&fx, 3).assignment, Bytes::from_static(b"x"));
    assert_eq!(g.state(), GroupState::Stable);
}

#[test]
fn pending_member_expires_after_session_timeout() {
    let mut g = Group::new("g", limits(0), 0);
    let _ = g.join(
        JoinRequest {
            require_known_member_id: true,
            ..req("")
        },
        1,
        "p",
        0,
    );
    assert!(g.is_pending_member("p"));
    let _ = g.poll(i64::from(SESSION) - 1);
    assert!(g.is_pending_member("p"));
    let _ = g.poll(i64::from(SESSION));
    assert!(!g.is_pending_member("p"));
    let fx = g.join(req("p"), 2, "unused", i64::from(SESSION));
    assert_eq!(
        only_join(&fx, 2).error,
        Some(ResponseError::UnknownMemberId)
    );
}

#[test]
fn a_pending_member_holds_the_rebalance_until_it_joins_or_expires() {
    let mut g = stable_one(0);
    let _ = g.join(
        JoinRequest {
            require_known_member_id: true,
            ..req("")
        },
        5,
        "p",
        0,
    );
    // The leader asks for a rebalance; m1 is the only member but p is still pending.
    let fx = g.join(req("m1"), 6, "unused", 0);
    assert!(fx.joins.is_empty());
    let fx = g.poll(i64::from(SESSION));
    let r = only_join(&fx, 6);
    assert_eq!(r.generation_id, 2);
    assert_eq!(r.members.len(), 1);
}

#[test]
fn two_members_join_and_sync() {
    let g = stable_two(0);
    assert_eq!(g.generation(), 2);
    assert_eq!(g.leader(), Some("m1"));
    assert_eq!(
        g.member("m2").unwrap().assignment,
        Bytes::from_static(b"a2")
    );
}

#[test]
fn heartbeat_signals_rebalance_and_errors() {
    let mut g = stable_two(0);
    assert_eq!(g.heartbeat("m1", None, 2, 10), Ok(()));
    assert_eq!(
        g.heartbeat("m1", None, 1, 10),
        Err(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        g.heartbeat("nobody", None, 2, 10),
        Err(ResponseError::UnknownMemberId)
    );
    let _ = g.join(req(""), 20, "m3", 10);
    assert_eq!(
        g.heartbeat("m1", None, 2, 20),
        Err(ResponseError::RebalanceInProgress)
    );
    // A stale sync during the rebalance is told to rejoin.
    let fx = g.sync(sync_req("m2", 2, &[]), 21, 20);
    assert_eq!(
        only_sync(&fx, 21).error,
        Some(ResponseError::RebalanceInProgress)
    );
    let fx = g.sync(sync_req("m2", 1, &[]), 22, 20);
    assert_eq!(
        only_sync(&fx, 22).error,
        Some(ResponseError::IllegalGeneration)
    );
    let fx = g.sync(sync_req("zz", 2, &[]), 23, 20);
    assert_eq!(
        only_sync(&fx, 23).error,
        Some(ResponseError::UnknownMemberId)
    );
}

#[test]
fn three_members_choose_the_protocol_all_support_by_vote() {
    let mut g = Group::new("g", limits(0), 0);
    let proto = |names: &[&str]| -> Vec<(String, Bytes)> {
        names
            .iter()
            .map(|n| (n.to_string(), Bytes::from_static(b"meta")))
            .collect()
    };
    let _ = g.join(
        JoinRequest {
            protocols: proto(&["cooperative-sticky", "range"]),
            ..req("")
        },
        1,
        "a",
        0,
    );
    let _ = persist_op(&mut g, |g| g.sync(sync_req("a", 1, &[]), 2, 0), 0);
    let _ = g.join(
        JoinRequest {
            protocols: proto(&["range", "cooperative-sticky"]),
            ..req("")
        },
        3,
        "b",
        0,
    );
    let fx = g.join(
        JoinRequest {
            protocols: proto(&["sticky", "range"]),
            ..req("")
        },
        4,
        "c",
        0,
    );
    assert!(fx.joins.is_empty());
    // A member with nothing in common is refused.
    let fx = g.join(
        JoinRequest {
            protocols: proto(&["roundrobin"]),
            ..req("")
        },
        5,
        "d",
        0,
    );
    assert_eq!(
        only_join(&fx, 5).error,
        Some(ResponseError::InconsistentGroupProtocol)
    );
    let fx = g.join(
        JoinRequest {
            protocol_type: "connect".into(),
            ..req("")
        },
        6,
        "e",
        0,
    );
    assert_eq!(
        only_join(&fx, 6).error,
        Some(ResponseError::InconsistentGroupProtocol)
    );
    let fx = g.join(
        JoinRequest {
            protocols: proto(&["cooperative-sticky", "range"]),
            ..req("a")
        },
        7,
        "unused",
        0,
    );
    // Only range is supported by all three; everyone votes for it.
    for w in [3, 4, 7] {
        let r = only_join(&fx, w);
        assert_eq!(r.protocol_name.as_deref(), Some("range"), "{r:?}");
        assert_eq!(r.generation_id, 2);
    }
    assert_eq!(only_join(&fx, 7).members.len(), 3);
}

#[test]
fn member_leaving_triggers_a_rebalance() {
    let mut g = stable_two(0);
    let (results, fx) = g
        .leave(
            &[LeavingMember {
                member_id: "m2".into(),
                group_instance_id: None,
            }],
            5,
        )
        .unwrap();
    assert_eq!(results, vec![Ok(())]);
    assert!(fx.joins.is_empty());
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    let fx = g.join(req("m1"), 30, "unused", 6);
    let r = only_join(&fx, 30);
    assert_eq!((r.generation_id, r.members.len()), (3, 1));
    let (results, _) = g
        .leave(
            &[LeavingMember {
                member_id: "ghost".into(),
                group_instance_id: None,
            }],
            7,
        )
        .unwrap();
    assert_eq!(results, vec![Err(ResponseError::UnknownMemberId)]);
}

#[test]
fn last_member_leaving_empties_the_group() {
    let mut g = stable_one(0);
    let (_, fx) = g
        .leave(
            &[LeavingMember {
                member_id: "m1".into(),
                group_instance_id: None,
            }],
            5,
        )
        .unwrap();
    assert_eq!(g.state(), GroupState::Empty);
    assert_eq!(g.generation(), 2);
    assert_eq!(fx.stores, vec![PendingStore::Empty]);
    assert_eq!(g.metadata_value(&PendingStore::Empty).members.len(), 0);
    assert_eq!(
        g.heartbeat("m1", None, 1, 6),
        Err(ResponseError::UnknownMemberId)
    );
}

#[test]
fn session_expiry_removes_the_member_and_rebalances() {
    let mut g = stable_two(0);
    // m1 keeps heartbeating, m2 goes silent.
    assert_eq!(g.heartbeat("m1", None, 2, 6_000), Ok(()));
    let _ = g.poll(i64::from(SESSION) - 1);
    assert!(g.has_member("m2"));
    let _ = g.poll(i64::from(SESSION));
    assert!(!g.has_member("m2"));
    assert!(g.has_member("m1"));
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert_eq!(
        g.heartbeat("m1", None, 2, 10_001),
        Err(ResponseError::RebalanceInProgress)
    );
}

#[test]
fn rebalance_timeout_drops_members_that_did_not_rejoin_and_elects_a_new_leader() {
    let mut g = stable_two(0);
    // m2 triggers a rebalance by changing its metadata; the leader m1 never rejoins but keeps
    // heartbeating (its session stays alive).
    let fx = g.join(
        JoinRequest {
            protocols: vec![("range".into(), subscription(&["t", "u"]))],
            ..req("m2")
        },
        40,
        "unused",
        1_000,
    );
    assert!(fx.joins.is_empty());
    let mut now = 1_000;
    while now < 1_000 + i64::from(REBALANCE) - 1 {
        now += 5_000;
        let _ = g.heartbeat("m1", None, 2, now.min(30_999));
        assert!(g.poll(now.min(30_999)).joins.is_empty());
    }
    let fx = g.poll(1_000 + i64::from(REBALANCE));
    let r = only_join(&fx, 40);
    assert_eq!(r.generation_id, 3);
    assert_eq!(r.leader, "m2", "the member that rejoined leads");
    assert_eq!(r.members.len(), 1);
    assert!(!g.has_member("m1"));
}

#[test]
fn member_that_never_syncs_is_removed_after_the_rebalance_timeout() {
    let mut g = stable_one(0);
    let _ = g.join(req(""), 10, "m2", 0);
    let fx = g.join(req("m1"), 11, "unused", 0);
    assert_eq!(fx.joins.len(), 2);
    // Only the leader syncs; both keep heartbeating.
    let _ = persist_op(
        &mut g,
        |g| g.sync(sync_req("m1", 2, &[("m1", "a"), ("m2", "b")]), 12, 0),
        0,
    );
    assert_eq!(g.state(), GroupState::Stable);
    for now in [9_000, 18_000, 27_000] {
        assert_eq!(g.heartbeat("m1", None, 2, now), Ok(()));
        assert_eq!(g.heartbeat("m2", None, 2, now), Ok(()));
    }
    let _ = g.poll(i64::from(REBALANCE) - 1);
    assert!(g.has_member("m2"));
    let _ = g.poll(i64::from(REBALANCE));
    assert!(!g.has_member("m2"));
    assert_eq!(g.state(), GroupState::PreparingRebalance);
}

#[test]
fn leader_rejoining_in_stable_forces_a_rebalance_but_followers_do_not() {
    let mut g = stable_two(0);
    let fx = g.join(req("m2"), 50, "unused", 1);
    let r = only_join(&fx, 50);
    assert_eq!((r.error, r.generation_id), (None, 2));
    assert_eq!(g.state(), GroupState::Stable);
    let fx = g.join(req("m1"), 51, "unused", 2);
    assert!(fx.joins.is_empty());
    assert_eq!(g.state(), GroupState::PreparingRebalance);
}

#[test]
fn group_max_size_is_enforced() {
    let mut g = Group::new(
        "g",
        GroupLimits {
            max_size: 2,
            ..limits(0)
        },
        0,
    );
    let _ = g.join(req(""), 1, "m1", 0);
    let _ = persist_op(&mut g, |g| g.sync(sync_req("m1", 1, &[]), 2, 0), 0);
    let _ = g.join(req(""), 3, "m2", 0);
    let fx = g.join(req("m1"), 4, "unused", 0);
    assert_eq!(fx.joins.len(), 2);
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    let fx = g.join(req(""), 5, "m3", 0);
    let r = only_join(&fx, 5);
    assert_eq!(r.error, Some(ResponseError::GroupMaxSizeReached));
    assert_eq!(r.member_id, "");
    assert!(!g.has_member("m3"));
    // Existing members are still welcome.
    let fx = g.join(req("m2"), 6, "unused", 0);
    assert_eq!(only_join(&fx, 6).error, None);
}

#[test]
fn session_timeout_outside_the_broker_bounds_is_refused() {
    let mut g = Group::new("g", limits(0), 0);
    for bad in [5_999, 300_001] {
        let fx = g.join(
            JoinRequest {
                session_timeout_ms: bad,
                ..req("")
            },
            1,
            "m",
            0,
        );
        assert_eq!(
            only_join(&fx, 1).error,
            Some(ResponseError::InvalidSessionTimeout)
        );
    }
    assert_eq!(g.members().count(), 0);
}

#[test]
fn unknown_member_id_on_join_of_an_existing_group() {
    let mut g = stable_one(0);
    let fx = g.join(req("who"), 9, "unused", 1);
    assert_eq!(
        only_join(&fx, 9).error,
        Some(ResponseError::UnknownMemberId)
    );
}

/// Two static members s1 (leader) and s2 in Stable at generation 1.
fn stable_static(now: i64) -> Group {
    let mut g = Group::new("g", limits(0), now);
    let fx = g.join(static_req("", "i1"), 1, "s1-old", now);
    assert_eq!(only_join(&fx, 1).generation_id, 1);
    let _ = persist_op(&mut g, |g| g.sync(sync_req("s1-old", 1, &[]), 2, now), now);
    let _ = g.join(static_req("", "i2"), 3, "s2-old", now);
    let fx = g.join(static_req("s1-old", "i1"), 4, "unused", now);
    assert_eq!(fx.joins.len(), 2);
    let mut sync = sync_req("s1-old", 2, &[("s1-old", "A1"), ("s2-old", "A2")]);
    sync.group_instance_id = Some("i1".into());
    let _ = persist_op(&mut g, |g| g.sync(sync, 5, now), now);
    let mut sync = sync_req("s2-old", 2, &[]);
    sync.group_instance_id = Some("i2".into());
    let fx = g.sync(sync, 6, now);
    assert_eq!(only_sync(&fx, 6).assignment, Bytes::from_static(b"A2"));
    assert_eq!(g.state(), GroupState::Stable);
    g
}

#[test]
fn static_member_rejoins_without_a_rebalance_and_keeps_its_assignment() {
    let mut g = stable_static(0);
    let fx = g.join(static_req("", "i2"), 10, "s2-new", 100);
    assert!(
        fx.joins.is_empty(),
        "answered after the new member id is stored"
    );
    assert_eq!(fx.stores.len(), 1);
    assert_eq!(g.state(), GroupState::Stable);
    let value = g.metadata_value(&fx.stores[0]);
    assert!(value.members.iter().any(|m| m.member_id == "s2-new"
        && m.group_instance_id.as_deref() == Some("i2")
        && m.assignment == Bytes::from_static(b"A2")));
    let fx = persist(&mut g, fx, 100);
    let r = only_join(&fx, 10);
    assert_eq!(r.error, None);
    assert_eq!(r.member_id, "s2-new");
    assert_eq!(r.generation_id, 2, "no new generation");
    assert_eq!(r.leader, "s1-old");
    assert_eq!(g.state(), GroupState::Stable);
    assert_eq!(g.static_member_id("i2"), Some("s2-new"));

    let mut sync = sync_req("s2-new", 2, &[]);
    sync.group_instance_id = Some("i2".into());
    let fx = g.sync(sync, 11, 101);
    assert_eq!(only_sync(&fx, 11).assignment, Bytes::from_static(b"A2"));

    // The old incarnation is fenced everywhere.
    assert_eq!(
        g.heartbeat("s2-old", Some("i2"), 2, 102),
        Err(ResponseError::FencedInstanceId)
    );
    let mut sync = sync_req("s2-old", 2, &[]);
    sync.group_instance_id = Some("i2".into());
    let fx = g.sync(sync, 12, 102);
    assert_eq!(
        only_sync(&fx, 12).error,
        Some(ResponseError::FencedInstanceId)
    );
    let fx = g.join(static_req("s2-old", "i2"), 13, "unused", 102);
    assert_eq!(
        only_join(&fx, 13).error,
        Some(ResponseError::FencedInstanceId)
    );
    assert_eq!(
        g.validate_offset_commit("s2-old", Some("i2"), 2, 102),
        Err(ResponseError::FencedInstanceId)
    );
    assert_eq!(
        g.validate_offset_commit("s2-new", Some("i2"), 2, 102),
        Ok(())
    );
    let (results, _) = g
        .leave(
            &[LeavingMember {
                member_id: "s2-old".into(),
                group_instance_id: Some("i2".into()),
            }],
            103,
        )
        .unwrap();
    assert_eq!(results, vec![Err(ResponseError::FencedInstanceId)]);
}

#[test]
fn static_leader_rejoining_with_v9_is_told_to_skip_assignment() {
    let mut g = stable_static(0);
    let fx = g.join(
        JoinRequest {
            supports_skip_assignment: true,
            ..static_req("", "i1")
        },
        20,
        "s1-new",
        5,
    );
    let fx = persist(&mut g, fx, 5);
    let r = only_join(&fx, 20);
    assert_eq!(r.leader, "s1-new");
    assert!(r.skip_assignment);
    assert_eq!(r.members.len(), 2);
    assert_eq!(g.state(), GroupState::Stable);
}

#[test]
fn static_leader_rejoining_before_v9_is_not_named_leader() {
    let mut g = stable_static(0);
    let fx = persist_op(&mut g, |g| g.join(static_req("", "i1"), 20, "s1-new", 5), 5);
    let r = only_join(&fx, 20);
    assert_eq!(r.leader, "s1-old");
    assert!(!r.skip_assignment);
    assert!(r.members.is_empty());
    assert_eq!(g.leader(), Some("s1-new"));
}

#[test]
fn static_member_with_new_metadata_triggers_a_rebalance() {
    let mut g = stable_static(0);
    let fx = g.join(
        JoinRequest {
            protocols: vec![("range".into(), subscription(&["t", "other"]))],
            ..static_req("", "i2")
        },
        30,
        "s2-new",
        5,
    );
    assert!(fx.stores.is_empty());
    assert_eq!(g.state(), GroupState::PreparingRebalance);
}

#[test]
fn failed_static_rejoin_store_restores_the_old_member() {
    let mut g = stable_static(0);
    let fx = g.join(static_req("", "i2"), 10, "s2-new", 1);
    let store = fx.stores.into_iter().next().unwrap();
    let fx = g.store_completed(store, Err(ResponseError::NotCoordinator), 1);
    let r = only_join(&fx, 10);
    assert_eq!(r.error, Some(ResponseError::NotCoordinator));
    assert_eq!(g.static_member_id("i2"), Some("s2-old"));
    assert!(g.has_member("s2-old"));
    assert!(!g.has_member("s2-new"));
}

#[test]
fn static_member_is_kept_through_a_rebalance_until_its_session_ends() {
    let mut g = stable_static(0);
    // A dynamic member joins; s2 (static) does not rejoin in time but is not dropped.
    let _ = g.join(req(""), 40, "d1", 1);
    let _ = g.join(static_req("s1-old", "i1"), 41, "unused", 1);
    assert_eq!(
        g.heartbeat("s2-old", Some("i2"), 2, 25_000),
        Err(ResponseError::RebalanceInProgress)
    );
    let fx = g.poll(1 + i64::from(REBALANCE));
    assert_eq!(fx.joins.len(), 2);
    assert!(g.has_member("s2-old"));
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    assert_eq!(only_join(&fx, 41).members.len(), 3);
}

#[test]
fn new_static_member_with_known_instance_but_wrong_id_is_unknown() {
    let mut g = stable_static(0);
    let fx = g.join(static_req("made-up", "i9"), 60, "unused", 1);
    assert_eq!(
        only_join(&fx, 60).error,
        Some(ResponseError::UnknownMemberId)
    );
}

#[test]
fn offset_commit_validation() {
    // Simple consumers commit into an empty group.
    let mut g = Group::new("g", limits(0), 0);
    assert_eq!(g.validate_offset_commit("", None, -1, 0), Ok(()));
    let mut g = stable_two(0);
    assert_eq!(
        g.validate_offset_commit("", None, -1, 1),
        Err(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        g.validate_offset_commit("m1", None, 1, 1),
        Err(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        g.validate_offset_commit("zz", None, 2, 1),
        Err(ResponseError::UnknownMemberId)
    );
    assert_eq!(g.validate_offset_commit("m1", None, 2, 1), Ok(()));
    // During PreparingRebalance commits are still accepted.
    let _ = g.join(req(""), 70, "m3", 2);
    assert_eq!(g.validate_offset_commit("m1", None, 2, 2), Ok(()));
    let _ = g.join(req("m1"), 71, "unused", 2);
    let _ = g.join(req("m2"), 72, "unused", 2);
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    assert_eq!(
        g.validate_offset_commit("m1", None, 3, 3),
        Err(ResponseError::RebalanceInProgress)
    );
}

#[test]
fn failed_assignment_store_fails_the_syncs_and_rebalances() {
    let mut g = stable_one(0);
    let _ = g.join(req(""), 10, "m2", 0);
    let _ = g.join(req("m1"), 11, "unused", 0);
    let fx = g.sync(sync_req("m2", 2, &[]), 12, 0);
    assert!(fx.syncs.is_empty());
    let fx = g.sync(sync_req("m1", 2, &[("m1", "a")]), 13, 0);
    let store = fx.stores.into_iter().next().unwrap();
    let fx = g.store_completed(store, Err(ResponseError::NotCoordinator), 0);
    assert_eq!(
        only_sync(&fx, 12).error,
        Some(ResponseError::NotCoordinator)
    );
    assert_eq!(
        only_sync(&fx, 13).error,
        Some(ResponseError::NotCoordinator)
    );
    assert_eq!(g.state(), GroupState::PreparingRebalance);
}

#[test]
fn initial_delay_is_extended_while_members_arrive() {
    let mut g = Group::new("g", limits(3_000), 0);
    let _ = g.join(req(""), 1, "a", 0);
    let _ = g.join(req(""), 2, "b", 2_000);
    // The first delay ran out, but b arrived meanwhile: wait another delay.
    assert!(g.poll(3_000).joins.is_empty());
    let fx = g.poll(6_000);
    assert_eq!(fx.joins.len(), 2);
    assert_eq!(only_join(&fx, 1).generation_id, 1);
}

#[test]
fn rejoining_while_parked_answers_the_older_request() {
    let mut g = stable_two(0);
    let _ = g.join(req("m1"), 80, "unused", 1);
    let fx = g.join(req("m1"), 81, "unused", 2);
    assert_eq!(
        only_join(&fx, 80).error,
        Some(ResponseError::RebalanceInProgress)
    );
}

#[test]
fn unload_answers_parked_requests_with_not_coordinator() {
    let mut g = stable_one(0);
    let _ = g.join(req(""), 90, "m2", 1);
    let fx = g.unload();
    assert_eq!(
        only_join(&fx, 90).error,
        Some(ResponseError::NotCoordinator)
    );
}

#[test]
fn loaded_group_is_stable_and_members_must_heartbeat() {
    let value = GroupValue {
        protocol_type: "consumer".into(),
        generation: 7,
        protocol: Some("range".into()),
        leader: Some("m1".into()),
        current_state_timestamp: 5,
        members: vec![MemberValue {
            member_id: "m1".into(),
            group_instance_id: Some("i1".into()),
            client_id: "c".into(),
            client_host: "h".into(),
            rebalance_timeout_ms: REBALANCE,
            session_timeout_ms: SESSION,
            subscription: subscription(&["t"]),
            assignment: Bytes::from_static(b"A"),
        }],
    };
    let (mut g, fx) = Group::load("g", value, limits(0), 1_000);
    assert!(fx.joins.is_empty() && fx.stores.is_empty());
    assert_eq!(g.state(), GroupState::Stable);
    assert_eq!(g.generation(), 7);
    assert!(g.is_subscribed_to("t"));
    assert_eq!(g.heartbeat("m1", Some("i1"), 7, 2_000), Ok(()));
    let _ = g.poll(2_000 + i64::from(SESSION));
    assert_eq!(g.state(), GroupState::Empty);
    assert_eq!(g.generation(), 8);
}

#[test]
fn offsets_expire_per_kip_211() {
    let value = |ts: i64| OffsetValue {
        offset: 1,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp: ts,
        expire_timestamp: None,
    };
    // Simple group: counted from each commit.
    let mut simple = Group::new("s", limits(0), 0);
    simple.load_offset("t", 0, value(0));
    simple.load_offset("t", 1, value(500));
    assert_eq!(
        simple.expired_offsets(1_000, 1_000),
        vec![("t".to_string(), 0)]
    );

    // Consumer group: nothing expires while it is stable and subscribed...
    let mut g = stable_one(0);
    g.load_offset("t", 0, value(0));
    g.load_offset("gone", 0, value(0));
    assert_eq!(
        g.expired_offsets(10_000_000, 1_000),
        vec![("gone".to_string(), 0)],
        "only topics nobody subscribes to"
    );
    // ...and once empty, everything expires retention after it became empty.
    let _ = g.leave(
        &[LeavingMember {
            member_id: "m1".into(),
            group_instance_id: None,
        }],
        50_000,
    );
    assert_eq!(g.state(), GroupState::Empty);
    assert!(g.expired_offsets(50_999, 1_000).is_empty());
    assert_eq!(g.expired_offsets(51_000, 1_000).len(), 2);
    g.remove_offset(&("t".to_string(), 0));
    assert!(!g.maybe_mark_dead(51_000));
    g.remove_offset(&("gone".to_string(), 0));
    assert!(g.maybe_mark_dead(51_000));
    assert_eq!(g.state(), GroupState::Dead);
}

fn offset(n: i64) -> OffsetValue {
    OffsetValue {
        offset: n,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp: 0,
        expire_timestamp: None,
    }
}

fn key(topic: &str, partition: i32) -> (String, i32) {
    (topic.to_string(), partition)
}

fn shown(g: &Group, topic: &str, partition: i32) -> Option<i64> {
    g.offset(&key(topic, partition)).map(|v| v.offset)
}

#[test]
fn a_pending_commit_shows_only_once_replicated() {
    let mut g = Group::new("s", limits(0), 0);
    g.load_offset("t", 0, offset(1));
    g.prepare_offset_commit([key("t", 0), key("t", 1)], 10);
    assert_eq!(
        shown(&g, "t", 0),
        Some(1),
        "the previous offset while pending"
    );
    assert_eq!(shown(&g, "t", 1), None);
    assert!(g.has_pending_offset(&key("t", 0)) && g.has_pending_offset(&key("t", 1)));
    assert_eq!(
        g.offsets().count(),
        1,
        "OffsetFetch of all partitions: committed only"
    );
    g.complete_offset_commit(
        vec![(key("t", 0), offset(5)), (key("t", 1), offset(6))],
        10,
        true,
    );
    assert_eq!((shown(&g, "t", 0), shown(&g, "t", 1)), (Some(5), Some(6)));
    assert!(!g.has_pending_offset(&key("t", 0)) && !g.has_pending_offset(&key("t", 1)));
}

#[test]
fn a_failed_commit_is_dropped_and_the_previous_offset_stays() {
    let mut g = Group::new("s", limits(0), 0);
    g.load_offset("t", 0, offset(1));
    g.prepare_offset_commit([key("t", 0), key("t", 1)], 10);
    g.complete_offset_commit(
        vec![(key("t", 0), offset(5)), (key("t", 1), offset(6))],
        10,
        false,
    );
    assert_eq!((shown(&g, "t", 0), shown(&g, "t", 1)), (Some(1), None));
    assert!(!g.has_pending_offset(&key("t", 0)) && !g.has_pending_offset(&key("t", 1)));
    // Nothing but the failed commit: the group holds no offsets and may go.
    let mut empty = Group::new("e", limits(0), 0);
    empty.prepare_offset_commit([key("t", 0)], 3);
    assert!(empty.has_offsets());
    assert!(
        !empty.maybe_mark_dead(0),
        "a pending commit keeps an empty group"
    );
    empty.complete_offset_commit(vec![(key("t", 0), offset(5))], 3, false);
    assert!(!empty.has_offsets());
    assert!(empty.maybe_mark_dead(0));
}

#[test]
fn commits_completing_out_of_order_keep_the_latest_in_the_log() {
    let mut g = Group::new("s", limits(0), 0);
    // B (later in the log) completes before A: A must not move the offset back.
    g.prepare_offset_commit([key("t", 0)], 10);
    g.prepare_offset_commit([key("t", 0)], 20);
    g.complete_offset_commit(vec![(key("t", 0), offset(9))], 20, true);
    assert_eq!(shown(&g, "t", 0), Some(9));
    assert!(!g.has_pending_offset(&key("t", 0)));
    g.complete_offset_commit(vec![(key("t", 0), offset(5))], 10, true);
    assert_eq!(shown(&g, "t", 0), Some(9));
    // Again with C pending when A completes late.
    g.prepare_offset_commit([key("t", 0)], 30);
    g.prepare_offset_commit([key("t", 0)], 40);
    g.complete_offset_commit(vec![(key("t", 0), offset(12))], 40, true);
    g.prepare_offset_commit([key("t", 0)], 50);
    g.complete_offset_commit(vec![(key("t", 0), offset(11))], 30, true);
    assert_eq!(shown(&g, "t", 0), Some(12));
    assert!(g.has_pending_offset(&key("t", 0)), "C is still pending");
    g.complete_offset_commit(vec![(key("t", 0), offset(13))], 50, true);
    assert_eq!(shown(&g, "t", 0), Some(13));

    // In log order: A shows while B is pending; B failing leaves A.
    let mut g = Group::new("s", limits(0), 0);
    g.prepare_offset_commit([key("t", 0)], 10);
    g.prepare_offset_commit([key("t", 0)], 20);
    g.complete_offset_commit(vec![(key("t", 0), offset(5))], 10, true);
    assert_eq!(shown(&g, "t", 0), Some(5));
    assert!(g.has_pending_offset(&key("t", 0)), "B is still pending");
    g.complete_offset_commit(vec![(key("t", 0), offset(9))], 20, false);
    assert_eq!(shown(&g, "t", 0), Some(5));
    assert!(!g.has_pending_offset(&key("t", 0)));
}

#[test]
fn deleted_offsets_stay_deleted_when_a_pending_commit_completes() {
    let mut g = Group::new("s", limits(0), 0);
    g.load_offset("t", 0, offset(1));
    g.prepare_offset_commit([key("t", 0), key("t", 1)], 10);
    assert_eq!(
        g.stored_offset_keys().cloned().collect::<Vec<_>>(),
        vec![key("t", 0), key("t", 1)],
        "tombstones cover pending commits too"
    );
    g.remove_offset(&key("t", 0));
    g.remove_offset(&key("t", 1));
    g.complete_offset_commit(
        vec![(key("t", 0), offset(5)), (key("t", 1), offset(6))],
        10,
        true,
    );
    assert_eq!((shown(&g, "t", 0), shown(&g, "t", 1)), (None, None));
    assert!(!g.has_offsets());
}

#[test]
fn a_partition_with_a_pending_commit_does_not_expire() {
    let mut g = Group::new("s", limits(0), 0);
    g.load_offset("t", 0, offset(1));
    g.load_offset("t", 1, offset(1));
    g.prepare_offset_commit([key("t", 0)], 10);
    assert_eq!(g.expired_offsets(i64::MAX / 2, 1_000), vec![key("t", 1)]);
}

#[test]
fn delete_and_offset_delete_rules() {
    let mut g = stable_one(0);
    assert_eq!(g.delete(1), Err(ResponseError::NonEmptyGroup));
    assert_eq!(
        g.check_offset_delete(&[("t".into(), 0), ("u".into(), 0)]),
        Ok(vec![Err(ResponseError::GroupSubscribedToTopic), Ok(())])
    );
    let mut empty = Group::new("e", limits(0), 0);
    assert_eq!(
        empty.check_offset_delete(&[("t".into(), 0)]),
        Ok(vec![Ok(())])
    );
    assert_eq!(empty.delete(1), Ok(()));
    assert_eq!(empty.delete(1), Err(ResponseError::GroupIdNotFound));
    let fx = empty.join(req(""), 1, "x", 2);
    assert_eq!(
        only_join(&fx, 1).error,
        Some(ResponseError::CoordinatorNotAvailable)
    );
}

#[test]
fn leave_of_a_pending_member_and_a_static_member_by_instance_id() {
    let mut g = stable_static(0);
    let _ = g.join(
        JoinRequest {
            require_known_member_id: true,
            ..req("")
        },
        1,
        "p",
        0,
    );
    let (results, _) = g
        .leave(
            &[
                LeavingMember {
                    member_id: "p".into(),
                    group_instance_id: None,
                },
                LeavingMember {
                    member_id: String::new(),
                    group_instance_id: Some("i2".into()),
                },
            ],
            1,
        )
        .unwrap();
    assert_eq!(results, vec![Ok(()), Ok(())]);
    assert!(!g.is_pending_member("p"));
    assert_eq!(g.static_member_id("i2"), None);
    assert_eq!(g.state(), GroupState::PreparingRebalance);
}

#[test]
fn next_deadline_tracks_the_earliest_timer() {
    let g = stable_one(100);
    assert_eq!(
        g.next_deadline(),
        Some(100 + i64::from(REBALANCE).min(i64::from(SESSION)))
    );
}

#[test]
fn parked_joins_do_not_keep_the_timer_due_during_a_long_rebalance() {
    let mut g = stable_two(0);
    // The leader rejoins with a 5-minute rebalance timeout and parks; m2 has not rejoined yet
    // but keeps heartbeating (it is busy processing, as a slow consumer is).
    let fx = g.join(
        JoinRequest {
            rebalance_timeout_ms: 300_000,
            ..req("m1")
        },
        20,
        "unused",
        1_000,
    );
    assert!(fx.joins.is_empty());
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    // m1's last heartbeat was at 0: its session would have lapsed at SESSION.
    let mut now = 6_000;
    while now < 300_000 {
        assert_eq!(
            g.heartbeat("m2", None, 2, now),
            Err(ResponseError::RebalanceInProgress)
        );
        let deadline = g.next_deadline().unwrap();
        assert!(
            deadline > now,
            "next deadline {deadline} is not after now {now}: the group would be polled on every tick"
        );
        let fx = g.poll(now);
        assert!(fx.joins.is_empty() && fx.syncs.is_empty(), "{fx:?}");
        assert!(g.has_member("m1"), "a parked member's session is suspended");
        now += 6_000;
    }
    // The rebalance timeout ends the join phase: m2 never rejoined and is dropped, m1 leads
    // generation 3 and gets a fresh session from then.
    let fx = g.poll(301_000);
    let r = only_join(&fx, 20);
    assert_eq!((r.error, r.generation_id), (None, 3));
    assert!(!g.has_member("m2"));
    assert_eq!(g.member("m1").unwrap().heartbeat_deadline, 301_000 + 10_000);
}

#[test]
fn parked_syncs_do_not_keep_the_timer_due_and_restart_the_session_when_answered() {
    let mut g = stable_two(0);
    let _ = g.join(
        JoinRequest {
            rebalance_timeout_ms: 300_000,
            ..req("m1")
        },
        30,
        "unused",
        1_000,
    );
    let fx = g.join(req("m2"), 31, "unused", 1_000);
    assert_eq!(only_join(&fx, 30).generation_id, 3);
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    // The follower parks in SyncGroup; the leader takes minutes to assign, heartbeating.
    let fx = g.sync(sync_req("m2", 3, &[]), 32, 1_000);
    assert!(fx.syncs.is_empty());
    for now in (7_000..200_000).step_by(6_000) {
        assert_eq!(g.heartbeat("m1", None, 3, now), Ok(()));
        let deadline = g.next_deadline().unwrap();
        assert!(deadline > now, "next deadline {deadline} <= now {now}");
        let fx = g.poll(now);
        assert!(fx.joins.is_empty() && fx.syncs.is_empty(), "{fx:?}");
    }
    let fx = persist_op(
        &mut g,
        |g| {
            g.sync(
                sync_req("m1", 3, &[("m1", "a1"), ("m2", "a2")]),
                33,
                200_000,
            )
        },
        200_000,
    );
    assert_eq!(only_sync(&fx, 32).assignment, Bytes::from_static(b"a2"));
    assert_eq!(g.state(), GroupState::Stable);
    // Answered: m2's session runs again, from now.
    assert_eq!(
        g.member("m2").unwrap().heartbeat_deadline,
        200_000 + i64::from(SESSION)
    );
    assert!(g.next_deadline().unwrap() > 200_000);
}

#[test]
fn simple_commits_into_an_empty_group_ignore_the_member_id() {
    // Kafka (GroupCoordinator.validateOffsetCommit, ClassicGroup.validateOffsetCommit) accepts
    // any generation -1 commit into an Empty group before it looks at the member id.
    let mut g = Group::new("g", limits(0), 0);
    assert_eq!(g.validate_offset_commit("someone", None, -1, 0), Ok(()));
    assert_eq!(
        g.validate_offset_commit("someone", Some("i1"), -1, 0),
        Ok(())
    );
    // A generation >= 0 is checked against the members.
    assert_eq!(
        g.validate_offset_commit("someone", None, 0, 0),
        Err(ResponseError::UnknownMemberId)
    );
    // Once the group has members, generation -1 commits must name one.
    let mut g = stable_one(0);
    assert_eq!(
        g.validate_offset_commit("someone", None, -1, 1),
        Err(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        g.validate_offset_commit("m1", None, -1, 1),
        Err(ResponseError::IllegalGeneration)
    );
}
