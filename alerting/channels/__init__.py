"""Notification channels: webhook, PagerDuty, phone (Twilio-style), email, Alertmanager forwarding."""
