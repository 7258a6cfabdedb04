"""redis-py against pactdb's Redis front end (crates/redis).

Run by tests/redis_clients.rs against a TLS demo it started; the
environment says where (REDIS_PORTS: the nodes' Redis ports, REDIS_TLS_DIR:
the client certificate dir with ca.crt, client.crt, client.key) and what
the failover test kills (FAILOVER_PID, a group's primary, FAILOVER_KEYS:
keys of that group, FAILOVER_PORT: the Redis port of another node).
Plain unittest, so nothing but redis-py is needed.
"""

import os
import threading
import time
import unittest

import redis

PORTS = [int(p) for p in os.environ["REDIS_PORTS"].split(",")]
TLS_DIR = os.environ["REDIS_TLS_DIR"]
RUN = os.environ.get("REDIS_RUN", "r")  # a prefix: keys of one run stay apart


def connect(port=None, protocol=2, **kw):
    return redis.Redis(
        host="127.0.0.1",
        port=port or PORTS[0],
        protocol=protocol,
        ssl=True,
        ssl_ca_certs=os.path.join(TLS_DIR, "ca.crt"),
        ssl_certfile=os.path.join(TLS_DIR, "client.crt"),
        ssl_keyfile=os.path.join(TLS_DIR, "client.key"),
        socket_timeout=60,
        **kw,
    )


def k(name):
    return f"{RUN}:{name}"


class Raw:
    """One connection, replies as sent (no redis-py reply callbacks)."""

    def __init__(self, port=None):
        pool = connect(port=port).connection_pool
        try:
            self.conn = pool.get_connection()
        except TypeError:  # redis-py before 5.3 names a command
            self.conn = pool.get_connection("_")

    def __call__(self, *args):
        self.conn.send_command(*args)
        return self.conn.read_response()


class Connection(unittest.TestCase):
    def setUp(self):
        self.r = connect()

    def test_ping_echo_select_auth(self):
        self.assertTrue(self.r.ping())
        self.assertEqual(Raw()("PING", "hi"), b"hi")
        self.assertEqual(self.r.echo("x"), b"x")
        self.assertTrue(self.r.execute_command("SELECT", 0))
        with self.assertRaisesRegex(redis.ResponseError, "DB index is out of range"):
            self.r.execute_command("SELECT", 1)
        with self.assertRaisesRegex(redis.AuthenticationError, "without any password configured"):
            self.r.execute_command("AUTH", "secret")
        self.assertTrue(self.r.execute_command("AUTH", "default", "anything"))
        with self.assertRaises(redis.AuthenticationError):
            self.r.execute_command("AUTH", "someone", "pw")

    def test_hello_switches_between_resp2_and_resp3(self):
        r3 = connect(protocol=3)  # sends HELLO 3
        hello = r3.execute_command("HELLO", 3)
        self.assertEqual(hello[b"proto"] if b"proto" in hello else hello["proto"], 3)
        r3.set(k("h"), "v")
        self.assertEqual(r3.get(k("h")), b"v")
        self.assertIsNone(r3.get(k("h-missing")))
        # RESP2 answers a map as a flat list.
        flat = self.r.execute_command("HELLO", 2, "AUTH", "default", "pw", "SETNAME", "me")
        self.assertIn(b"proto", flat)
        self.assertEqual(self.r.client_getname(), "me")  # redis-py decodes it
        with self.assertRaisesRegex(redis.ResponseError, "NOPROTO"):
            self.r.execute_command("HELLO", 4)

    def test_client_commands(self):
        self.assertTrue(self.r.client_setname("worker-1"))
        self.assertEqual(self.r.client_getname(), "worker-1")
        self.assertIsInstance(self.r.client_id(), int)
        other = connect()
        self.assertNotEqual(other.client_id(), self.r.client_id())
        with self.assertRaisesRegex(redis.ResponseError, "cannot contain spaces"):
            self.r.client_setname("a b")

    def test_command_introspection(self):
        raw = Raw()
        n = raw("COMMAND", "COUNT")
        self.assertGreaterEqual(n, 30)
        info = raw("COMMAND", "INFO", "get", "mset", "nosuch")
        self.assertEqual(info[0][0], b"get")
        self.assertEqual(info[0][1], 2)
        self.assertEqual(info[1][3:6], [1, -1, 2])
        self.assertIsNone(info[2])
        everything = self.r.command()  # redis-py parses COMMAND into a dict
        self.assertIn("set", everything)
        self.assertEqual(everything["set"]["arity"], -3)
        docs = raw("COMMAND", "DOCS", "get")
        self.assertTrue(docs)

    def test_errors_are_worded_as_redis_words_them(self):
        with self.assertRaisesRegex(
            redis.ResponseError, r"unknown command 'FROBNICATE', with args beginning with: 'a' 'b' "
        ):
            self.r.execute_command("FROBNICATE", "a", "b")
        with self.assertRaisesRegex(redis.ResponseError, r"wrong number of arguments for 'get' command"):
            self.r.execute_command("GET")
        with self.assertRaisesRegex(redis.ResponseError, r"key of 5000 bytes exceeds the limit of 4096 bytes"):
            self.r.set("k" * 5000, "v")
        with self.assertRaisesRegex(redis.ResponseError, r"value of 1048577 bytes exceeds the limit of 1048576"):
            self.r.set(k("big"), b"x" * (1024 * 1024 + 1))
        # The largest value goes through whole.
        self.r.set(k("big"), b"y" * (1024 * 1024))
        self.assertEqual(len(self.r.get(k("big"))), 1024 * 1024)

    def test_quit(self):
        r = Raw()
        self.assertEqual(r("PING"), b"PONG")
        self.assertEqual(r("QUIT"), b"OK")
        with self.assertRaises(redis.ConnectionError):
            r("PING")


class Strings(unittest.TestCase):
    def setUp(self):
        self.r = connect()

    def test_get_set_and_options(self):
        key = k("s")
        self.r.delete(key)
        self.assertIsNone(self.r.get(key))
        self.assertIsNone(self.r.set(key, "a", xx=True))  # XX on a missing key: nil
        self.assertIsNone(self.r.get(key))
        self.assertTrue(self.r.set(key, "a", nx=True))
        self.assertIsNone(self.r.set(key, "b", nx=True))
        self.assertEqual(self.r.get(key), b"a")
        self.assertTrue(self.r.set(key, "b", xx=True))
        self.assertEqual(self.r.set(key, "c", get=True), b"b")
        self.assertEqual(self.r.get(key), b"c")
        self.assertEqual(self.r.getset(key, "d"), b"c")
        self.assertIsNone(self.r.getset(k("s-new"), "x"))
        for opt in (dict(ex=10), dict(px=100), dict(keepttl=True)):
            with self.assertRaisesRegex(redis.ResponseError, "does not support key expiry"):
                self.r.set(key, "e", **opt)
        self.assertEqual(self.r.get(key), b"d")  # a refused SET changed nothing
        with self.assertRaisesRegex(redis.ResponseError, "syntax error"):
            self.r.execute_command("SET", key, "v", "NX", "XX")
        self.assertEqual(self.r.get(key), b"d")

    def test_binary_values(self):
        value = bytes(range(256)) * 4
        self.r.set(k("bin"), value)
        self.assertEqual(self.r.get(k("bin")), value)

    def test_setnx_append_strlen(self):
        key = k("ap")
        self.r.delete(key)
        self.assertTrue(self.r.setnx(key, "ab"))
        self.assertFalse(self.r.setnx(key, "zz"))
        self.assertEqual(self.r.append(key, "cd"), 4)
        self.assertEqual(self.r.append(k("ap-new"), "xyz"), 3)
        self.assertEqual(self.r.strlen(key), 4)
        self.assertEqual(self.r.strlen(k("ap-missing")), 0)
        self.assertEqual(self.r.get(key), b"abcd")

    def test_counters(self):
        key = k("n")
        self.r.delete(key)
        self.assertEqual(self.r.incr(key), 1)
        self.assertEqual(self.r.incrby(key, 10), 11)
        self.assertEqual(self.r.decr(key), 10)
        self.assertEqual(self.r.decrby(key, 4), 6)
        self.assertEqual(self.r.execute_command("INCRBY", key, -7), -1)
        self.r.set(k("notnum"), "abc")
        with self.assertRaisesRegex(redis.ResponseError, "value is not an integer or out of range"):
            self.r.incr(k("notnum"))
        with self.assertRaisesRegex(redis.ResponseError, "value is not an integer or out of range"):
            self.r.execute_command("INCRBY", key, "1.5")
        self.r.set(k("max"), str(2**63 - 1))
        with self.assertRaisesRegex(redis.ResponseError, "overflow"):
            self.r.incr(k("max"))

    def test_concurrent_increments_are_not_lost(self):
        key = k("race")
        self.r.delete(key)
        per, threads = 25, 8

        def work():
            c = connect()
            for _ in range(per):
                c.incr(key)

        ts = [threading.Thread(target=work) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(int(self.r.get(key)), per * threads)

    def test_del_exists_mget_mset(self):
        keys = [k(f"m{i}") for i in range(6)]
        self.r.delete(*keys)
        self.assertTrue(self.r.mset({key: f"v{i}" for i, key in enumerate(keys)}))
        self.assertEqual(self.r.mget(keys + [k("m-missing")]), [f"v{i}".encode() for i in range(6)] + [None])
        self.assertEqual(self.r.exists(keys[0], keys[1], k("m-missing"), keys[0]), 3)
        self.assertEqual(self.r.delete(keys[0], keys[1], k("m-missing")), 2)
        self.assertEqual(self.r.delete(keys[2]), 1)
        self.assertEqual(self.r.delete(keys[2]), 0)
        self.assertEqual(self.r.exists(*keys), 3)
        with self.assertRaisesRegex(redis.ResponseError, "wrong number of arguments for 'mset'"):
            self.r.execute_command("MSET", keys[0], "a", keys[1])

    def test_mset_is_atomic_across_groups(self):
        # Keys spread over every group; a reader must never see a mix of two
        # MSETs (MGET is one consistent read, MSET one transaction).
        keys = [k(f"atom{i}") for i in range(8)]
        self.r.mset({key: "0" for key in keys})
        stop = threading.Event()
        mixed = []

        def writer():
            c = connect()
            for i in range(1, 40):
                c.mset({key: str(i) for key in keys})
            stop.set()

        def reader():
            c = connect()
            while not stop.is_set():
                time.sleep(0.05)  # readers that never pause starve MSET (see ARCHITECTURE.md)
                vals = c.mget(keys)
                if len(set(vals)) != 1:
                    mixed.append(vals)

        ts = [threading.Thread(target=writer), threading.Thread(target=reader), threading.Thread(target=reader)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(mixed, [])
        self.assertEqual(set(self.r.mget(keys)), {b"39"})


class Keyspace(unittest.TestCase):
    def setUp(self):
        self.r = connect()

    def test_keys_scan_dbsize(self):
        prefix = k("ks")
        want = {f"{prefix}:{i}".encode() for i in range(57)}
        self.r.mset({key: "x" for key in want})
        self.assertEqual(set(self.r.keys(f"{prefix}:*")), want)
        self.assertEqual(set(self.r.keys(f"{prefix}:1?")), {f"{prefix}:1{i}".encode() for i in range(10)})
        self.assertEqual(set(self.r.scan_iter(match=f"{prefix}:*", count=7)), want)
        self.assertEqual(set(self.r.scan_iter(match=f"{prefix}:*", count=1000)), want)
        cursor, page = self.r.scan(0, count=5)
        self.assertIsInstance(cursor, int)
        with self.assertRaisesRegex(redis.ResponseError, "invalid cursor"):
            self.r.scan(987654321)
        self.assertGreaterEqual(self.r.dbsize(), len(want))
        self.assertEqual(self.r.info("keyspace")["db0"]["keys"], self.r.dbsize())

    def test_info_shows_groups_roles_and_epochs(self):
        info = self.r.info()
        self.assertEqual(info["redis_mode"], "standalone")
        self.assertEqual(info["role"], "master")
        self.assertEqual(info["pactdb_groups"], 3)
        self.assertGreaterEqual(info["connected_clients"], 1)
        for g in range(3):
            group = info[f"group{g}"]
            self.assertIn(group["mode"], ("passive", "active"))
            self.assertGreaterEqual(group["epoch"], 1)
            self.assertIn(group["role"], ("primary", "backup", "none"))
            self.assertIn(str(group["leader"]), str(group["members"]).split("|"))
        self.assertEqual(set(self.r.info("replication")) & {"redis_version"}, set())


class Transactions(unittest.TestCase):
    def setUp(self):
        self.r = connect()

    def test_multi_exec_runs_everything_atomically(self):
        a, b, n = k("ta"), k("tb"), k("tn")
        self.r.delete(a, b, n)
        with self.r.pipeline(transaction=True) as p:
            p.set(a, "1").incr(n).get(a).mset({b: "2"}).incrby(n, 5).exists(a, b).getset(a, "9").delete(b)
            self.assertEqual(p.execute(), [True, 1, b"1", True, 6, 2, b"1", 1])
        self.assertEqual(self.r.mget(a, b, n), [b"9", None, b"6"])

    def test_an_error_inside_exec_fails_only_its_command(self):
        a = k("terr")
        self.r.set(a, "text")
        with self.r.pipeline(transaction=True) as p:
            p.incr(a).set(k("terr2"), "ok")
            res = p.execute(raise_on_error=False)
        self.assertIsInstance(res[0], redis.ResponseError)
        self.assertTrue(res[1])
        self.assertEqual(self.r.get(k("terr2")), b"ok")

    def test_discard_and_execabort(self):
        r = Raw()
        a = k("td")
        r("SET", a, "before")
        self.assertEqual(r("MULTI"), b"OK")
        self.assertEqual(r("SET", a, "after"), b"QUEUED")
        self.assertEqual(r("DISCARD"), b"OK")
        self.assertEqual(r("GET", a), b"before")
        with self.assertRaisesRegex(redis.ResponseError, "DISCARD without MULTI"):
            r("DISCARD")
        with self.assertRaisesRegex(redis.ResponseError, "EXEC without MULTI"):
            r("EXEC")
        r("MULTI")
        r("SET", a, "after")
        with self.assertRaisesRegex(redis.ResponseError, "unknown command 'NOSUCH'"):
            r("NOSUCH", "x")
        with self.assertRaises(redis.exceptions.ExecAbortError):
            r("EXEC")
        self.assertEqual(r("GET", a), b"before")
        r("MULTI")
        with self.assertRaisesRegex(redis.ResponseError, "MULTI calls can not be nested"):
            r("MULTI")
        with self.assertRaisesRegex(redis.ResponseError, "wrong number of arguments"):
            r("GET")
        with self.assertRaises(redis.exceptions.ExecAbortError):
            r("EXEC")

    def test_watch_conflict_between_two_clients(self):
        key, other = k("w"), k("w-other")
        self.r.set(key, "1")
        first = self.r.pipeline(transaction=True)
        second = connect().pipeline(transaction=True)
        first.watch(key)
        second.watch(key)
        self.assertEqual(first.get(key), b"1")  # immediate mode after WATCH
        self.assertEqual(second.get(key), b"1")
        first.multi()
        first.set(key, "from-first")
        self.assertEqual(first.execute(), [True])
        second.multi()
        second.set(key, "from-second").set(other, "x")
        with self.assertRaises(redis.WatchError):  # EXEC answered nil
            second.execute()
        self.assertEqual(self.r.get(key), b"from-first")
        self.assertIsNone(self.r.get(other))
        # UNWATCH forgets: the next EXEC commits.
        second.reset()
        second.watch(key)
        self.r.set(key, "changed")
        second.unwatch()
        second.multi()
        second.set(key, "from-second")
        self.assertEqual(second.execute(), [True])
        self.assertEqual(self.r.get(key), b"from-second")

    def test_watched_counter_transactions_lose_no_update(self):
        key = k("wc")
        self.r.set(key, "0")
        per, threads = 10, 4

        def work():
            c = connect()
            done = 0
            while done < per:
                with c.pipeline(transaction=True) as p:
                    try:
                        p.watch(key)
                        v = int(p.get(key))
                        p.multi()
                        p.set(key, str(v + 1))
                        p.execute()
                        done += 1
                    except redis.WatchError:
                        continue

        ts = [threading.Thread(target=work) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(int(self.r.get(key)), per * threads)


class ZzFailover(unittest.TestCase):
    """Last (unittest runs classes by name): it kills a node."""

    def test_failover_between_multi_and_exec(self):
        pid = int(os.environ["FAILOVER_PID"])
        keys = os.environ["FAILOVER_KEYS"].split(",")
        r = Raw(port=int(os.environ["FAILOVER_PORT"]))
        counter, mark = keys[0], keys[1]
        r("DEL", counter, mark)
        self.assertEqual(r("MULTI"), b"OK")
        self.assertEqual(r("INCR", counter), b"QUEUED")
        self.assertEqual(r("SET", mark, "committed"), b"QUEUED")
        os.kill(pid, 9)  # the primary of the group holding both keys
        try:
            res = r("EXEC")
            self.assertEqual(res, [1, b"OK"])
            committed = True
        except redis.ResponseError as e:
            # Failing cleanly is allowed: an error, and then all or nothing.
            print(f"EXEC failed cleanly across the failover: {e}")
            committed = None
        after = connect(port=int(os.environ["FAILOVER_PORT"]))
        n, m = after.get(counter), after.get(mark)
        if committed:
            self.assertEqual((n, m), (b"1", b"committed"))  # exactly once
        else:
            self.assertIn((n, m), [(None, None), (b"1", b"committed")])
        # The group serves again through the surviving nodes.
        self.assertEqual(after.incr(counter), int(n or 0) + 1)


if __name__ == "__main__":
    unittest.main(verbosity=2)
