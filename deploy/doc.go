// Package deploy holds deployment files, checked by its tests: a hardened
// systemd unit (atoll.service), a Dockerfile and a docker compose file for
// 3 regions x 3 nodes (compose.yaml), and a Grafana dashboard of the
// nodes' metrics (grafana-dashboard.json). It has no Go code to import.
package deploy
