"""The ways events come in: MQTT, the HTTP API and the monitoring tools' webhooks."""
