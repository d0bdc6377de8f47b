//go:build tools

// Package tools pins Traefik's command for `go mod tidy`.
package tools

import _ "github.com/traefik/traefik/v3/cmd/traefik"
