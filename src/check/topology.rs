//! What `unstick check` reports about the Redis deployment: a single server, a Sentinel
//! service (master, replicas, sentinels) or a Cluster (masters, replicas). A master without a
//! replica loses its sessions in a failover, and `redis.wait_replicas` beyond the replicas
//! there are makes every login wait; both are warnings.

use super::Finding;
use crate::config::{NodeAddress, SentinelTarget, StoreConfig, StoreUrl};
use fred::prelude::*;
use std::collections::HashMap;
use std::time::Duration;

const TOPIC: &str = "redis";

pub(super) async fn check_topology(config: &StoreConfig, pool: &Pool) -> Vec<Finding> {
    match &config.url {
        StoreUrl::Memory => Vec::new(),
        StoreUrl::Redis(_) => single(config, pool).await,
        StoreUrl::Sentinel(target) => sentinel(config, target, pool).await,
        StoreUrl::Cluster(_) => cluster(config, pool).await,
    }
}

/// `INFO replication` of the node a client is connected to: role and online replicas.
struct Replication {
    role: String,
    replicas: Vec<String>,
}

async fn replication(client: &Client) -> Result<Replication, String> {
    let text: String = client
        .custom(fred::cmd!("INFO"), vec!["replication"])
        .await
        .map_err(|e| e.details().to_string())?;
    Ok(parse_replication(&text))
}

fn parse_replication(text: &str) -> Replication {
    let mut role = String::new();
    let mut replicas = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(value) = line.strip_prefix("role:") {
            role = value.to_string();
        } else if line.starts_with("slave") && line.contains("state=online") {
            // slave0:ip=10.0.0.6,port=6379,state=online,offset=...,lag=0
            let field = |name: &str| {
                line.split([':', ','])
                    .find_map(|f| f.strip_prefix(name))
                    .unwrap_or("?")
                    .to_string()
            };
            replicas.push(format!("{}:{}", field("ip="), field("port=")));
        }
    }
    Replication { role, replicas }
}

fn replicas_word(n: usize) -> &'static str {
    if n == 1 {
        "replica"
    } else {
        "replicas"
    }
}

/// `redis.wait_replicas` against the fewest replicas a master has.
fn wait_finding(config: &StoreConfig, fewest: usize, what: &str) -> Option<Finding> {
    let wanted = config.wait_replicas as usize;
    (wanted > fewest).then(|| {
        Finding::warning(
            TOPIC,
            format!(
                "redis.wait_replicas is {wanted} but {what} has {fewest} {} online: every login \
                 there waits redis.wait_timeout and is counted in \
                 unstick_session_replica_wait_timeouts_total",
                replicas_word(fewest)
            ),
            "add replicas, or lower redis.wait_replicas",
        )
    })
}

fn no_replica_warning(what: &str) -> Finding {
    Finding::warning(
        TOPIC,
        format!("{what} has no replica online: if it fails, its sessions are lost"),
        "run at least one replica per master",
    )
}

async fn single(config: &StoreConfig, pool: &Pool) -> Vec<Finding> {
    let info = match replication(pool.next()).await {
        Ok(info) => info,
        Err(e) => return vec![unreadable(&e)],
    };
    if info.role != "master" {
        return vec![Finding::error(
            TOPIC,
            format!(
                "redis.url points to a {} (INFO replication): it refuses writes, so no login \
                 can be recorded",
                info.role
            ),
            "point redis.url at the master, or use redis.sentinels to follow failovers",
        )];
    }
    let mut findings = vec![Finding::ok(
        TOPIC,
        format!(
            "topology: single Redis (master, {} {} online)",
            info.replicas.len(),
            replicas_word(info.replicas.len())
        ),
    )];
    findings.extend(wait_finding(config, info.replicas.len(), "the master"));
    findings
}

fn unreadable(error: &str) -> Finding {
    Finding::warning(
        TOPIC,
        format!("cannot read the replication state ({error}), so the topology was not checked"),
        "allow `info` (and `cluster|nodes` on a Cluster) to this ACL user",
    )
}

async fn sentinel(config: &StoreConfig, target: &SentinelTarget, pool: &Pool) -> Vec<Finding> {
    let service = &target.service_name;
    let mut findings = Vec::new();
    let master = pool
        .next()
        .active_connections()
        .into_iter()
        .next()
        .map_or_else(|| "?".to_string(), |s| format!("{}:{}", s.host, s.port));
    match replication(pool.next()).await {
        Ok(info) => {
            let n = info.replicas.len();
            let mut what = format!(
                "topology: sentinel service {service}: master at {master}, {n} {} online",
                replicas_word(n)
            );
            if n > 0 {
                what.push_str(&format!(" ({})", info.replicas.join(", ")));
            }
            findings.push(Finding::ok(TOPIC, what));
            if n == 0 {
                findings.push(no_replica_warning(&format!("the master of {service}")));
            }
            findings.extend(wait_finding(config, n, &format!("the master of {service}")));
        }
        Err(e) => findings.push(unreadable(&e)),
    }
    let mut reachable = 0;
    let mut quorum = None;
    for address in &target.sentinels {
        match ask_sentinel(config, target, address).await {
            Ok(fields) => {
                reachable += 1;
                quorum = quorum.or_else(|| fields.get("quorum").cloned());
            }
            Err(e) => findings.push(Finding::warning(
                TOPIC,
                format!("sentinel {address} does not answer for service {service}: {e}"),
                "check redis.sentinels, redis.sentinel_username/sentinel_password and that \
                 this sentinel monitors the service; fewer sentinels make a failover less \
                 likely to reach its quorum",
            )),
        }
    }
    findings.push(Finding::ok(
        TOPIC,
        format!(
            "sentinels: {reachable} of {} configured answer for {service} (quorum {})",
            target.sentinels.len(),
            quorum.as_deref().unwrap_or("?")
        ),
    ));
    findings
}

/// `SENTINEL MASTER <service>` on one sentinel, as a field map.
async fn ask_sentinel(
    config: &StoreConfig,
    target: &SentinelTarget,
    address: &NodeAddress,
) -> Result<HashMap<String, String>, String> {
    let mut client_config = Config {
        server: ServerConfig::new_centralized(address.host.as_str(), address.port),
        username: target.sentinel_username.clone(),
        password: target.sentinel_password.clone(),
        ..Config::default()
    };
    if target.auth.tls {
        let tls = crate::session::store::tls_client_config(config.ca_file.as_deref())
            .map_err(|e| e.to_string())?;
        client_config.tls = Some(fred::types::config::TlsConnector::from(tls).into());
    }
    let client = Builder::from_config(client_config)
        .with_connection_config(|c| c.connection_timeout = config.connect_timeout)
        .build()
        .map_err(|e| e.to_string())?;
    let bounded = Duration::from_secs(1).max(config.connect_timeout);
    let result = tokio::time::timeout(bounded, async {
        client.init().await.map_err(|e| e.details().to_string())?;
        client
            .custom::<HashMap<String, String>, _>(
                fred::cmd!("SENTINEL"),
                vec!["MASTER", target.service_name.as_str()],
            )
            .await
            .map_err(|e| e.details().to_string())
    })
    .await
    .unwrap_or_else(|_| Err("no answer in time".to_string()));
    let _ = tokio::time::timeout(Duration::from_secs(1), client.quit()).await;
    result
}

/// One node of `CLUSTER NODES`.
#[derive(Debug, PartialEq, Eq)]
struct ClusterNode {
    id: String,
    address: String,
    master: bool,
    /// The master's id, for a replica.
    replica_of: Option<String>,
    failing: bool,
}

fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (id, address, flags, master_id) = (
                fields.first()?,
                fields.get(1)?,
                fields.get(2)?,
                fields.get(3)?,
            );
            let flags: Vec<&str> = flags.split(',').collect();
            Some(ClusterNode {
                id: id.to_string(),
                // ip:port@cport[,hostname]
                address: address.split('@').next().unwrap_or(address).to_string(),
                master: flags.contains(&"master"),
                replica_of: (flags.contains(&"slave") && *master_id != "-")
                    .then(|| master_id.to_string()),
                failing: flags.contains(&"fail") || flags.contains(&"fail?"),
            })
        })
        .collect()
}

async fn cluster(config: &StoreConfig, pool: &Pool) -> Vec<Finding> {
    let text: String = match pool
        .next()
        .custom(fred::cmd!("CLUSTER"), vec!["NODES"])
        .await
    {
        Ok(text) => text,
        Err(e) => return vec![unreadable(e.details())],
    };
    let nodes = parse_cluster_nodes(&text);
    let live = |n: &&ClusterNode| !n.failing;
    let masters: Vec<&ClusterNode> = nodes.iter().filter(|n| n.master).filter(live).collect();
    let replicas: Vec<&ClusterNode> = nodes
        .iter()
        .filter(|n| n.replica_of.is_some())
        .filter(live)
        .collect();
    let failing = nodes.iter().filter(|n| n.failing).count();
    let mut findings = vec![Finding::ok(
        TOPIC,
        format!(
            "topology: cluster: {} {}, {} {}",
            masters.len(),
            if masters.len() == 1 {
                "master"
            } else {
                "masters"
            },
            replicas.len(),
            replicas_word(replicas.len())
        ),
    )];
    if failing > 0 {
        findings.push(Finding::warning(
            TOPIC,
            format!("{failing} cluster node(s) are flagged as failing"),
            "repair or forget them (CLUSTER FORGET) before relying on a failover",
        ));
    }
    let mut fewest = usize::MAX;
    for master in &masters {
        let count = replicas
            .iter()
            .filter(|r| r.replica_of.as_deref() == Some(master.id.as_str()))
            .count();
        fewest = fewest.min(count);
        if count == 0 {
            findings.push(no_replica_warning(&format!(
                "cluster master {}",
                master.address
            )));
        }
    }
    if fewest != usize::MAX {
        findings.extend(wait_finding(config, fewest, "a cluster master"));
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_are_read() {
        let text = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002 master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@40003 master - 0 1426238318243 3 connected 10923-16383
6ec2 127.0.0.1:30005@40005 slave,fail 67ed 0 1426238316232 5 connected
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
";
        let nodes = parse_cluster_nodes(text);
        assert_eq!(nodes.len(), 5);
        assert_eq!(nodes.iter().filter(|n| n.master).count(), 3);
        assert_eq!(nodes[0].replica_of.as_deref(), Some("e7d1"));
        assert_eq!(nodes[0].address, "127.0.0.1:30004");
        assert!(nodes[3].failing);
    }

    #[test]
    fn replication_info_is_read() {
        let info = parse_replication(
            "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
             slave0:ip=127.0.0.1,port=7001,state=online,offset=42,lag=0\r\n\
             slave1:ip=127.0.0.1,port=7002,state=wait_bgsave,offset=0,lag=0\r\n",
        );
        assert_eq!(info.role, "master");
        assert_eq!(info.replicas, ["127.0.0.1:7001"]);
    }
}
