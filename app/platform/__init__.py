"""What every Lookout service is built from: settings loading, telemetry, health, errors, logs
and the message broker's topology. A service package (the users API in ``app``, the notifier in
``app.notifier``) imports from here and nothing from another service."""
