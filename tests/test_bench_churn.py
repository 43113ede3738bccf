"""E's plan (what the churn writes, what FRR must hold after it) and its floor's bulk lines (no lab)."""

from __future__ import annotations

from bench.churn import ChurnPlan
from bench.floor_api import batch_lines
from bench.lab_env import prefixes

PEERS = {"ipv4": ["192.0.2.1"], "ipv6": ["2001:db8::1"]}


def test_the_churn_deletes_existing_services_creates_new_ones_interleaved_and_expects_the_rest() -> None:
    plan = ChurnPlan.of(10_000, 5000)
    operations = plan.operations()
    assert len(operations) == 5000
    assert operations[:4] == [("delete", 7500), ("create", 10_000), ("delete", 7501), ("create", 10_001)]
    assert sorted(index for action, index in operations if action == "delete") == list(range(7500, 10_000))
    expected = plan.expected()
    assert expected["ipv4"] == set(prefixes(7500, "ipv4")) | set(prefixes(2500, "ipv4", 10_000))
    assert len(expected["ipv6"]) == 10_000
    assert "198.18.30.221/32" not in expected["ipv4"]  # Service 7,900 (198.18.0.0 + 7,901): deleted
    assert "198.18.29.76/32" in expected["ipv4"]  # Service 7,499: kept


def test_at_a_small_size_the_churn_deletes_at_most_every_service() -> None:
    plan = ChurnPlan.of(1000, 5000)
    assert len(plan.operations()) == 2000
    assert plan.deleted == list(range(1000))
    assert plan.expected()["ipv4"] == set(prefixes(1000, "ipv4", 1000))


def test_the_e_floor_writes_the_requests_read_together_as_one_bulk_line_per_action_and_family() -> None:
    requests = [b"withdraw* 198.18.0.1/32 2001:db8:96::1/128", b"announce* 198.18.0.9/32 2001:db8:96::9/128",
                b"withdraw* 198.18.0.2/32 2001:db8:96::2/128"]  # fmt: skip
    assert batch_lines(requests, PEERS, "next-hop self") == [
        b"neighbor 192.0.2.1 withdraw attributes next-hop self nlri 198.18.0.1/32 198.18.0.2/32\n",
        b"neighbor 2001:db8::1 withdraw attributes next-hop self nlri 2001:db8:96::1/128 2001:db8:96::2/128\n",
        b"neighbor 192.0.2.1 announce attributes next-hop self nlri 198.18.0.9/32\n",
        b"neighbor 2001:db8::1 announce attributes next-hop self nlri 2001:db8:96::9/128\n",
    ]
