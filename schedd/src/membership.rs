//! The replicas of the group: where each listens, how the leader sees them, and membership
//! changes (`gantry admin replica add|remove`) through Raft configuration changes.
//!
//! A replica is added as a learner first: it receives the log (or a snapshot, when the
//! entries it needs are compacted away) without voting, so a blank newcomer can never
//! swing an election or a commit. Once it holds everything committed when it joined, it
//! is promoted to voter. One change at a time, as Raft's single-change rule requires.

use std::time::{Duration, Instant};

use gantry_proto as pb;
use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2};
use tonic::Status;
use tracing::info;

use crate::api::engine_status;
use crate::config::SchedConfig;
use crate::engine::{Engine, GroupStatus, Member};

/// How long an add waits for the learner to catch up before it leaves it a learner. Under
/// the CLI's one-minute request timeout.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(50);
const CATCH_UP_POLL: Duration = Duration::from_millis(100);

/// Where replica `id` listens: from the replicated state for members added by a change,
/// else from this replica's `peers`.
pub fn replica_url(engine: &Engine, config: &SchedConfig, id: u64) -> Option<String> {
    engine
        .read(|s| s.replica_addresses().get(&id).cloned())
        .or_else(|| config.peer_urls().ok()?.remove(&id))
}

/// The group as this replica sees it. Only the leader tracks how far the others are: on
/// another replica (a stale read), their `applied_index` and `lag` are 0.
pub fn replicas(engine: &Engine, config: &SchedConfig) -> pb::ReplicasResponse {
    let role = engine.role();
    let group = engine.group();
    let replicas = group
        .members
        .iter()
        .map(|m| {
            let own = m.id == role.id;
            let known = own || role.is_leader;
            let applied_index = match (own, known) {
                (true, _) => group.applied,
                (false, true) => m.matched,
                (false, false) => 0,
            };
            pb::Replica {
                id: m.id,
                address: replica_url(engine, config, m.id).unwrap_or_else(|| {
                    // A group of one is named by where it listens.
                    format!("http://{}", config.listen)
                }),
                role: match (m.learner, Some(m.id) == role.leader) {
                    (true, _) => "learner",
                    (false, true) => "leader",
                    (false, false) if own && role.leader.is_none() => "candidate",
                    (false, false) => "follower",
                }
                .to_string(),
                term: role.term,
                applied_index,
                lag: if known {
                    group.last_index.saturating_sub(applied_index)
                } else {
                    0
                },
            }
        })
        .collect();
    pb::ReplicasResponse {
        replicas,
        commit_index: group.commit,
    }
}

fn change(id: u64, change_type: ConfChangeType, address: Option<&str>) -> ConfChangeV2 {
    let mut single = ConfChangeSingle {
        node_id: id,
        ..Default::default()
    };
    single.set_change_type(change_type);
    let mut change = ConfChangeV2::default();
    change.mut_changes().push(single);
    if let Some(address) = address {
        change.set_context(address.as_bytes().to_vec().into());
    }
    change
}

fn member(group: &GroupStatus, id: u64) -> Option<&Member> {
    group.members.iter().find(|m| m.id == id)
}

fn member_list(group: &GroupStatus) -> String {
    let ids: Vec<String> = group.members.iter().map(|m| m.id.to_string()).collect();
    ids.join(", ")
}

/// Adds replica `id` listening at `url`: as a learner, then, once caught up, as a voter.
/// Repeating an add that was cut short (a learner already) carries on where it stopped.
pub async fn add(engine: &Engine, config: &SchedConfig, id: u64, url: &str) -> Result<(), Status> {
    if id == 0 {
        return Err(Status::invalid_argument("replica ids start at 1"));
    }
    let group = engine.group();
    for other in group.members.iter().filter(|m| m.id != id) {
        if replica_url(engine, config, other.id).as_deref() == Some(url) {
            return Err(Status::already_exists(format!(
                "replica {} already listens at {url}",
                other.id
            )));
        }
    }
    let known = replica_url(engine, config, id);
    match member(&group, id) {
        Some(m) if known.as_deref() != Some(url) => {
            return Err(Status::already_exists(format!(
                "replica {id} is already a {} at {}; remove it first to move it",
                if m.learner { "learner" } else { "voter" },
                known.unwrap_or_default()
            )));
        }
        Some(m) if !m.learner => return Ok(()),
        Some(_) => {}
        None => {
            engine
                .change_members(change(id, ConfChangeType::AddLearnerNode, Some(url)))
                .await
                .map_err(engine_status)?;
            info!(replica = id, %url, "replica added as a learner");
        }
    }
    wait_caught_up(engine, id).await?;
    engine
        .change_members(change(id, ConfChangeType::AddNode, Some(url)))
        .await
        .map_err(engine_status)?;
    info!(replica = id, %url, "replica promoted to voter");
    Ok(())
}

/// Waits until learner `id` holds everything committed when the wait began.
async fn wait_caught_up(engine: &Engine, id: u64) -> Result<(), Status> {
    let target = engine.group().commit;
    let start = Instant::now();
    loop {
        if !engine.role().is_leader {
            return Err(Status::unavailable(
                "this replica lost the leadership while the new replica caught up; run the \
                 add again against the new leader",
            ));
        }
        let group = engine.group();
        let matched = member(&group, id).map_or(0, |m| m.matched);
        if matched >= target {
            return Ok(());
        }
        if start.elapsed() > CATCH_UP_TIMEOUT {
            return Err(Status::deadline_exceeded(format!(
                "replica {id} joined as a learner but holds entries up to {matched} of \
                 {target} after {}s; it stays a learner. Check that it runs with --peers \
                 naming the other replicas, then run the add again",
                CATCH_UP_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(CATCH_UP_POLL).await;
    }
}

/// Removes replica `id`. The leader does not remove itself: it hands the leadership to the
/// most up-to-date voter and asks the caller to retry with the new leader.
pub async fn remove(engine: &Engine, id: u64) -> Result<(), Status> {
    let group = engine.group();
    let Some(target) = member(&group, id) else {
        return Err(Status::not_found(format!(
            "replica {id} is not a member (members: {})",
            member_list(&group)
        )));
    };
    let voters = group.members.iter().filter(|m| !m.learner).count();
    if !target.learner && voters == 1 {
        return Err(Status::failed_precondition(format!(
            "replica {id} is the only voter; a group cannot remove its last one"
        )));
    }
    let role = engine.role();
    if id == role.id {
        let successor = group
            .members
            .iter()
            .filter(|m| !m.learner && m.id != id)
            .max_by_key(|m| (m.matched, std::cmp::Reverse(m.id)))
            .map(|m| m.id);
        if let Some(to) = successor {
            engine.transfer_leader(to).map_err(engine_status)?;
            return Err(Status::unavailable(format!(
                "replica {id} leads, and hands the leadership to replica {to} before it is \
                 removed; retry"
            )));
        }
    }
    engine
        .change_members(change(id, ConfChangeType::RemoveNode, None))
        .await
        .map_err(engine_status)?;
    info!(replica = id, "replica removed");
    Ok(())
}
