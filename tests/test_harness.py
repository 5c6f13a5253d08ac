from backchannel.db.users import User


async def test_each_test_gets_a_migrated_database(db, alice: User) -> None:
    tables = {
        r["tablename"]
        for r in await db.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
    }
    assert {"clients", "users", "auth_requests", "audit_events", "schema_migrations"} <= tables
    assert await db.fetchval("SELECT count(*) FROM users") == 1
