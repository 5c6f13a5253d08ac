import asyncpg
from tests.support import factories

async def test_explain(db: asyncpg.Connection) -> None:
    await db.execute("SET enable_seqscan = off")
    rows = await db.fetch("""EXPLAIN SELECT
             (SELECT count(*) FROM (
                 SELECT 1 FROM auth_requests
                  WHERE user_id = $1 AND status = 'pending' AND expires_at > now()
                  LIMIT $2) p) AS pending,
             (SELECT count(*) FROM (
                 SELECT 1 FROM auth_requests
                  WHERE user_id = $1 AND created_at > now() - make_interval(secs => $4)
                  LIMIT $3) w) AS recent,
             (SELECT max(until) FROM user_prompt_mutes
               WHERE user_id = $1 AND until > now()) AS muted_until,
             CASE WHEN $5 THEN ARRAY(SELECT group_name FROM user_groups WHERE user_id = $1)
             END AS groups""", 1, 3, 10, 600, True)
    print("\n".join(r[0] for r in rows))
    rows = await db.fetch("""EXPLAIN SELECT count(DISTINCT r.user_id) AS n
                 FROM auth_requests r JOIN clients c ON c.client_id = r.client_id
                WHERE r.client_id = $1 AND r.denial_reason = 'not_me'
                  AND r.decided_at > greatest(now() - make_interval(secs => $2),
                                              coalesce(c.auto_suspended_at, '-infinity'))""", "x", 10)
    print("\n".join(r[0] for r in rows))
