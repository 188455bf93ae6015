import dagster as dg
import pytest

from ibpipeline import partitions, settings


@pytest.mark.parametrize(
    "good",
    [
        "U1234567",
        "DU1234567",
        "F12345",
        "I1234567",
        "U123456789",
        "U1234567F",
        "XXXXXXXX",
        "UXXXXXXX",
        "XXXXXUSD",
        "U***4321",
        "TEST_ACC",
        "A0001111",
        "u1234567",
        "U1234-5.6",
        "A" * 64,
    ],
)
def test_every_id_a_statement_carries_is_valid(good):
    assert partitions.validate_account_id(good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "A" * 65,
        "U12|34567",
        "U1234567,",
        "U[1]",
        "../etc",
        "U1..2",
        ".U123",
        "_U123",
        "*",
        "U1/2",
        "U1\\2",
        "U1'; DROP TABLE t; --",
        'U1"2',
        "U1 2",
        "U1\n2",
        "U12345=6",
        "U1%2",
        None,
    ],
)
def test_unsafe_account_ids_are_refused(bad):
    with pytest.raises(partitions.InvalidAccountIdError, match="invalid account id"):
        partitions.validate_account_id(bad)


def test_every_valid_id_is_a_dagster_partition_key():
    with dg.instance_for_test() as instance:
        ids = ["U1234567F", "U***4321", "TEST_ACC", "X.Y-Z"]
        assert partitions.register_accounts(instance, ids) == sorted(ids)
        key = partitions.account_date_key("U***4321", "2024-01-31")
        assert key.keys_by_dimension == {"account": "U***4321", "date": "2024-01-31"}


def test_register_accounts_validates_all_before_adding():
    with dg.instance_for_test() as instance:
        assert partitions.register_accounts(instance, ["U2222222", "U1111111"]) == [
            "U1111111",
            "U2222222",
        ]
        assert partitions.register_accounts(instance, ["U1111111", "U3333333"]) == ["U3333333"]
        with pytest.raises(partitions.InvalidAccountIdError):
            partitions.register_accounts(instance, ["U4444444", "bad|id"])
        assert instance.get_dynamic_partitions("account") == ["U1111111", "U2222222", "U3333333"]


def test_account_date_keys_and_daily_start():
    key = partitions.account_date_key("U1234567", "2024-01-31")
    assert str(key) == "U1234567|2024-01-31"
    with pytest.raises(partitions.InvalidAccountIdError):
        partitions.account_date_key("U1|2", "2024-01-31")
    assert partitions.daily.start.date().isoformat() == settings.start_date()


def test_start_date_setting(monkeypatch):
    monkeypatch.setenv(settings.START_DATE_ENV, "2023-05-01")
    assert settings.start_date() == "2023-05-01"
    monkeypatch.setenv(settings.START_DATE_ENV, "May 1")
    with pytest.raises(ValueError, match="IBPIPELINE_START_DATE"):
        settings.start_date()
