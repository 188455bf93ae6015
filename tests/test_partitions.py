import dagster as dg
import pytest

from ibpipeline import partitions, settings


@pytest.mark.parametrize("good", ["U1234567", "DU1234567", "F12345", "U123456789"])
def test_valid_account_ids(good):
    assert partitions.validate_account_id(good) == good


@pytest.mark.parametrize(
    "bad", ["", "u1234567", "U1234", "U1234567890", "ABC12345", "U12|34567", "U1234567,"]
)
def test_invalid_account_ids(bad):
    with pytest.raises(partitions.InvalidAccountIdError, match="invalid account id"):
        partitions.validate_account_id(bad)


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
