"""What an operator or a supervisor talks to: the control socket, metrics, health, systemd."""
