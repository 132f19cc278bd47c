"""The bench's CPU accounting: which recorded processes count towards which component."""

from __future__ import annotations

from bench.cpu import Snapshot, component_pids, per_order_ms


def test_single_process_stack_counts_its_one_nats_server() -> None:
    state = {
        "services": {"orders": 11, "payments": 12, "membership": 13, "analytics": 14},
        "postgres": {"embedded": True, "pid": 20, "port": 5500},
        "nats": {"embedded": True, "pid": 30},
        "topology": None,
    }
    pids = component_pids(state)
    assert pids == {"orders": [11], "payments": [12], "membership": [13], "analytics": [14],
                    "postgres": [20], "nats": [30], "haproxy": [], "pgbouncer": []}


def test_topology_counts_every_replica_node_balancer_and_pooler() -> None:
    state = {
        "services": {"orders-1": 11, "orders-2": 21, "payments-1": 12, "payments-2": 22,
                     "membership-1": 13, "membership-2": 23,
                     "analytics-1": 14, "analytics-2": 24},
        "postgres": {"embedded": True, "pid": 40},
        "nats": {"embedded": True, "cluster": True,
                 "nodes": [{"name": "n1", "pid": 51}, {"name": "n2", "pid": 52},
                           {"name": "n3", "pid": None}]},  # n3 stopped: nothing to count
        "topology": {"replicas": 2, "balancer": {"pid": 60, "config": "haproxy.cfg"},
                     "pgbouncer": {"pid": 70, "port": 42260, "config": "pgbouncer.ini"}},
    }
    pids = component_pids(state)
    assert pids["orders"] == [11, 21]
    assert pids["analytics"] == [14, 24]
    assert pids["nats"] == [51, 52]
    assert (pids["postgres"], pids["haproxy"], pids["pgbouncer"]) == ([40], [60], [70])


def test_state_of_a_stack_that_is_not_running_counts_nothing() -> None:
    assert all(group == [] for group in component_pids({}).values())


def test_per_order_total_leaves_out_the_generator() -> None:
    before = Snapshot({"orders": 1.0, "haproxy": 0.5, "generator": 2.0})
    after = Snapshot({"orders": 2.0, "haproxy": 0.6, "generator": 4.0})
    ms = per_order_ms(before, after, confirmed=100)
    assert ms["orders"] == 10.0
    assert round(ms["haproxy"], 6) == 1.0
    assert round(ms["total"], 6) == 11.0
