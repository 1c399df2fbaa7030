"""What every Pantau MQTT client takes from the settings: credentials and TLS."""

from __future__ import annotations

import paho.mqtt.client as mqtt

from pantau.settings import MqttSettings


def apply_credentials(client: mqtt.Client, settings: MqttSettings) -> None:
    """Username/password and TLS (CA, client certificate) as configured."""
    if settings.username:
        password = settings.password.get_secret_value() if settings.password else None
        client.username_pw_set(settings.username, password)
    if settings.tls:
        client.tls_set(
            ca_certs=str(settings.tls_ca_file) if settings.tls_ca_file else None,
            certfile=str(settings.tls_cert_file) if settings.tls_cert_file else None,
            keyfile=str(settings.tls_key_file) if settings.tls_key_file else None,
        )
