//! libpq's multi-host PostgreSQL URLs, which sqlx does not accept (launchbadge/sqlx#2290):
//! `postgres://user@h1:5432,h2:5433/db?target_session_attrs=read-write`. The service connects
//! to the first listed host that accepts writes and, while it runs, follows the primary when
//! another host becomes it ([`super::sql::SqlStore`]'s follower).

use std::time::Duration;

use sqlx::{AnyConnection, Connection};

/// The single-host URLs a PostgreSQL URL names, in its order: one for a plain URL, one per host
/// for libpq's `host1:port1,host2:port2` form. `target_session_attrs` (`read-write`, `primary`
/// or `any`; libpq's, and the only choice the service makes itself) is removed from each.
pub fn split(url: &str) -> Result<Vec<String>, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "a PostgreSQL URL starts with postgres://".to_string())?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (user, hosts) = match authority.rsplit_once('@') {
        Some((user, hosts)) => (format!("{user}@"), hosts),
        None => (String::new(), authority),
    };
    let tail = without_session_attrs(tail)?;
    if !hosts.contains(',') {
        // One host, or none (a Unix socket given as `?host=/run/postgresql`): as written.
        return Ok(vec![format!("{scheme}://{authority}{tail}")]);
    }
    let hosts: Vec<&str> = hosts.split(',').collect();
    if hosts.iter().any(|h| h.is_empty()) {
        return Err("an empty host in the database URL's host list".into());
    }
    Ok(hosts
        .into_iter()
        .map(|host| format!("{scheme}://{user}{host}{tail}"))
        .collect())
}

/// `tail` (path and query) without `target_session_attrs`, which must be one the service
/// honours: it always writes to the primary.
fn without_session_attrs(tail: &str) -> Result<String, String> {
    let Some((path, query)) = tail.split_once('?') else {
        return Ok(tail.to_string());
    };
    let mut kept = Vec::new();
    for parameter in query.split('&').filter(|p| !p.is_empty()) {
        match parameter.split_once('=') {
            Some(("target_session_attrs", "read-write" | "primary" | "any")) => {}
            Some(("target_session_attrs", other)) => {
                return Err(format!(
                    "target_session_attrs={other}: the service writes, so it connects to the \
                     primary (read-write or primary)"
                ));
            }
            _ => kept.push(parameter),
        }
    }
    Ok(if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    })
}

/// What the follower learns of a server each time it asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerState {
    /// The server is a primary (not in recovery).
    pub accepts_writes: bool,
    /// Its standbys whose confirmation a commit waits for (`pg_stat_replication`'s `sync` or
    /// `quorum`): 0 means an acknowledged commit is on this server alone. Reading it needs a
    /// superuser or `pg_monitor`; other roles see 0.
    pub replicas_in_sync: i64,
}

/// Asks a server (through any connection or pool to it) for its [`ServerState`].
pub async fn state_of<'c, E>(executor: E) -> Result<ServerState, sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let (in_recovery, replicas_in_sync): (bool, i64) = sqlx::query_as(
        "SELECT pg_is_in_recovery(), (SELECT count(*) FROM pg_stat_replication \
         WHERE sync_state IN ('sync', 'quorum'))",
    )
    .fetch_one(executor)
    .await?;
    Ok(ServerState {
        accepts_writes: !in_recovery,
        replicas_in_sync,
    })
}

/// Whether the server at `url` accepts writes (is not in recovery), asked on a connection of its
/// own within `timeout`; `false` if it cannot be reached.
pub async fn accepts_writes(url: &str, timeout: Duration) -> bool {
    let probe = async {
        let mut conn = AnyConnection::connect(url).await?;
        let state = state_of(&mut conn).await?;
        let _ = conn.close().await;
        Ok::<_, sqlx::Error>(state.accepts_writes)
    };
    matches!(tokio::time::timeout(timeout, probe).await, Ok(Ok(true)))
}

/// The first of `urls` whose server accepts writes.
pub async fn first_writable(urls: &[String], timeout: Duration) -> Option<usize> {
    for (i, url) in urls.iter().enumerate() {
        if accepts_writes(url, timeout).await {
            return Some(i);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_libpq_host_lists() {
        assert_eq!(
            split("postgres://u@a:1,b:2/db?target_session_attrs=read-write&sslmode=disable")
                .unwrap(),
            vec![
                "postgres://u@a:1/db?sslmode=disable",
                "postgres://u@b:2/db?sslmode=disable"
            ]
        );
        assert_eq!(
            split("postgresql://a,b/db?target_session_attrs=primary").unwrap(),
            vec!["postgresql://a/db", "postgresql://b/db"]
        );
        assert_eq!(
            split("postgres://postgres@127.0.0.1:5432/elicit").unwrap(),
            vec!["postgres://postgres@127.0.0.1:5432/elicit"]
        );
        assert_eq!(
            split("postgres:///elicit?host=/run/postgresql").unwrap(),
            vec!["postgres:///elicit?host=/run/postgresql"]
        );
        assert!(split("postgres://a,,b/db").is_err());
        assert!(split("postgres://a,b/db?target_session_attrs=read-only").is_err());
    }
}
