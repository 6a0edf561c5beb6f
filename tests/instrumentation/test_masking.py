"""What looks like a secret is masked before it reaches a log line or an error, wherever it comes from."""

import pytest

from dataflows.config import ConfigError, load_settings
from instrumentation.masking import masked_config, masked_pair, masked_url


def test_a_database_url_loses_its_password_wherever_it_is_written():
    assert masked_url("postgresql://flead:s3cret@db:5432/flead") == "postgresql://flead:***@db:5432/flead"
    assert masked_url("postgresql://flead@db/flead?password=s3cret&sslmode=require") == (
        "postgresql://flead@db/flead?password=***&sslmode=require"
    )
    assert (
        masked_url("host=db user=flead password='s3 cret' dbname=flead")
        == "host=db user=flead password=*** dbname=flead"
    )
    assert masked_url("postgres:/flead:s3cret@db/flead") == "postgres:/flead:***@db/flead"  # malformed


def test_a_url_without_a_password_is_shown_as_it_is():
    assert masked_url("postgresql://flead@db/flead") == "postgresql://flead@db/flead"


def test_kafka_settings_whose_key_names_a_secret_are_masked_and_the_others_kept():
    config = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "flead",
        "sasl.password": "hunter2",
        "ssl.key.password": "k",
        "sasl.oauthbearer.client.secret": "s",
        "sasl.oauthbearer.token.endpoint.url": "https://idp",
    }
    assert masked_config(config) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "flead",
        "sasl.password": "***",
        "ssl.key.password": "***",
        "sasl.oauthbearer.client.secret": "***",
        "sasl.oauthbearer.token.endpoint.url": "***",
    }
    assert masked_pair("client.id=flead") == "client.id=flead"


def test_a_malformed_kafka_setting_is_named_in_the_error_without_its_secret():
    with pytest.raises(ConfigError) as raised:
        load_settings({"FLEAD_KAFKA_BROKERS": "127.0.0.1:9092", "FLEAD_KAFKA_CONFIG": "sasl.password hunter2"})
    assert "hunter2" not in str(raised.value)
