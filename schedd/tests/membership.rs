//! Membership changes of a real three-replica group: a replica whose disk is lost is
//! removed, started blank, re-added with `gantry admin replica add`, catches up by snapshot
//! and votes; linearizable and `--stale` reads; bad membership requests change nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::fs;

use gantry_testkit::{
    Cluster, Noded, Schedd, Value, gantry, gantry_ok, submit, try_all_jobs, wait_for,
    wait_nodes_up, wait_state,
};

/// `gantry admin replicas -o json` from `server` (extra flags e.g. `--stale`).
fn replicas(server: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["admin", "replicas", "-o", "json"];
    args.extend_from_slice(extra);
    let out = gantry_ok(server, &args);
    serde_json::from_str::<Vec<Value>>(&out).unwrap()
}

fn ids_and_roles(rows: &[Value]) -> Vec<(u64, String)> {
    rows.iter()
        .map(|r| {
            (
                r["id"].as_u64().unwrap(),
                r["role"].as_str().unwrap().into(),
            )
        })
        .collect()
}

/// `gantry queue --all -o json` answered by `url` alone, from its own state.
fn stale_jobs(url: &str) -> Vec<(u64, String)> {
    let out = gantry_ok(
        url,
        &["queue", "--all", "--stale", "-o", "json", "--server", url],
    );
    serde_json::from_str::<Vec<Value>>(&out)
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["id"].as_u64().unwrap(),
                j["state"].as_str().unwrap().into(),
            )
        })
        .collect()
}

#[test]
fn a_wiped_replica_is_removed_re_added_catches_up_by_snapshot_and_votes() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let wd = work.to_str().unwrap();
    // Small snapshots: the log a newcomer would need is compacted away early.
    let mut cluster = Cluster::start(&dir.path().join("cluster"), 3, &["--snapshot-every", "20"]);
    let servers = cluster.servers();
    let _node = Noded::start(
        &servers,
        "node1",
        &dir.path().join("node1"),
        &["--gpus", "2", "--cpus", "4", "--mem", "4G"],
    );
    wait_nodes_up(&servers, 1);
    let mut ids: Vec<u64> = (0..15)
        .map(|_| submit(&servers, &["-D", wd, "--", "true"]))
        .collect();

    let leader = cluster.leader();
    let lost = cluster.followers_of(leader)[0];
    cluster.kill9(lost);
    cluster.wipe(lost);
    let after_remove = gantry_ok(&servers, &["admin", "replica", "remove", &lost.to_string()]);
    assert!(!after_remove.contains(&cluster.url(lost)), "{after_remove}");
    assert_eq!(replicas(&servers, &[]).len(), 2);

    // The group goes on without it, well past a few snapshots.
    ids.extend((0..30).map(|_| submit(&servers, &["-D", wd, "--", "true"])));
    // All ended, so that the views compared below no longer change.
    for id in &ids {
        wait_state(&servers, *id, "COMPLETED");
    }

    // Blank, it waits to be added; then it joins as a learner, catches up, and votes.
    cluster.start_joining(lost);
    let address = cluster.replica(lost).listen.clone();
    let out = gantry(
        &servers,
        &["admin", "replica", "add", &lost.to_string(), &address],
    );
    assert!(
        out.status.success(),
        "add failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        cluster.log_tails()
    );
    let rows = replicas(&servers, &[]);
    let roles = ids_and_roles(&rows);
    assert!(
        roles.contains(&(lost, "follower".to_string())),
        "the re-added replica is not a voting follower: {rows:?}"
    );
    let log = fs::read_to_string(cluster.replica(lost).logs.last().unwrap()).unwrap();
    assert!(
        log.contains("state replaced by a snapshot from the leader"),
        "the newcomer did not catch up by snapshot:\n{log}"
    );

    // Its own copy of the state (a --stale read answered by it alone) holds every job.
    let leader_view = stale_jobs(&cluster.url(leader));
    wait_for("the re-added replica to hold every job", || {
        (stale_jobs(&cluster.url(lost)) == leader_view).then_some(())
    });
    assert_eq!(leader_view.len(), ids.len());

    // It votes: with the old leader gone, it and the third replica elect a leader.
    cluster.kill9(leader);
    let new_leader = cluster.leader();
    assert_ne!(new_leader, leader);
    let next = submit(&servers, &["-D", wd, "--", "true"]);
    wait_state(&servers, next, "COMPLETED");
    assert_eq!(
        try_all_jobs(&servers).unwrap().len(),
        ids.len() + 1,
        "a job was lost across the membership changes"
    );
}

#[test]
fn a_leader_asked_to_remove_itself_hands_over_first() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(&dir.path().join("cluster"), 3, &[]);
    let servers = cluster.servers();
    let leader = cluster.leader();
    let out = gantry_ok(
        &servers,
        &["admin", "replica", "remove", &leader.to_string()],
    );
    assert!(!out.contains(&cluster.url(leader)), "{out}");
    let rows = replicas(&servers, &[]);
    let roles = ids_and_roles(&rows);
    assert_eq!(roles.len(), 2, "{rows:?}");
    assert!(roles.iter().all(|(id, _)| *id != leader), "{rows:?}");
    assert!(
        roles.iter().any(|(_, role)| role == "leader"),
        "no leader among the remaining replicas: {rows:?}"
    );
}

#[test]
fn stale_reads_are_answered_by_followers_and_others_by_the_leader_only() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(&dir.path().join("cluster"), 3, &[]);
    let servers = cluster.servers();
    let id = submit(&servers, &["--", "true"]);
    let leader = cluster.leader();
    let follower = cluster.url(cluster.followers_of(leader)[0]);

    let refused = gantry(&follower, &["show", &id.to_string(), "--server", &follower]);
    assert!(!refused.status.success());
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(text.contains("not the leader"), "{text}");

    // Followers apply what the leader committed: the job shows up there too.
    wait_for("the follower to have the job", || {
        let out = gantry(
            &follower,
            &["show", &id.to_string(), "--stale", "--server", &follower],
        );
        out.status.success().then_some(())
    });
    let rows = replicas(&follower, &["--stale", "--server", &follower]);
    assert_eq!(rows.len(), 3, "{rows:?}");
    let nodes = gantry_ok(&follower, &["nodes", "--stale", "--server", &follower]);
    assert!(nodes.starts_with("NAME"), "{nodes}");
}

#[test]
fn bad_membership_requests_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(&dir.path().join("cluster"), 3, &[]);
    let servers = cluster.servers();
    let before = replicas(&servers, &[]);
    let leader = cluster.leader();
    let taken = cluster.replica(leader).listen.clone();
    let cases: &[(&[&str], &str)] = &[
        (&["remove", "9"], "replica 9 is not a member"),
        (&["add", "0", "127.0.0.1:1"], "replica ids start at 1"),
        (&["add", "4", "http://[::1"], "invalid replica address"),
        (&["add", "4", &taken], "already listens at"),
        (&["add", "2", "127.0.0.1:1"], "replica 2 is already a voter"),
        (&["add", "x", "127.0.0.1:1"], "invalid value 'x'"),
    ];
    for (args, needle) in cases {
        let mut full = vec!["admin", "replica"];
        full.extend_from_slice(args);
        let out = gantry(&servers, &full);
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(text.contains(needle), "{args:?}: {text:?} lacks {needle:?}");
    }
    assert_eq!(replicas(&servers, &[]), before);

    // Only admins change the membership.
    let alone = Schedd::start(&dir.path().join("alone"), &["--admin", "nobody-here"]);
    let out = gantry(&alone.url, &["admin", "replica", "add", "2", "127.0.0.1:1"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("only admins may change the scheduler replicas"),
        "{text}"
    );
    assert_eq!(replicas(&alone.url, &[]).len(), 1);
}
