// Package jsonapi is the Kubernetes API client of the test rack's
// stand-ins (the fake k3s and the node runtime linked into it): JSON over
// HTTPS with a client certificate, on plain net/http. client-go would
// multiply the size of the fake k3s binary, which is copied onto every
// test host.
package jsonapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// maxAnswer bounds what is read of an answer (a Node list of a large rack
// is a few MiB).
const maxAnswer = 32 << 20

// Client sends requests to one API server.
type Client struct {
	// Base is the API server's URL; request paths are added to it.
	Base string
	HTTP *http.Client
	// UserAgent, when set, is sent with every request.
	UserAgent string
}

// New is a client of the API server at base that trusts caPEM and presents
// the client certificate certPEM/keyPEM (whose CN and O the API server's
// authorizers judge).
func New(base string, caPEM, certPEM, keyPEM []byte) (*Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("the API server's CA: no certificate in the PEM")
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}
	return &Client{
		Base: strings.TrimSuffix(base, "/"),
		HTTP: &http.Client{
			Timeout: 15 * time.Second,
			Transport: &http.Transport{
				TLSClientConfig:     &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
				TLSHandshakeTimeout: 5 * time.Second,
			},
		},
	}, nil
}

// Error is an answer outside 2xx.
type Error struct {
	Method, Path string
	Status       int
	// Message is the Status object's message, else the answer's text.
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.Status, e.Message)
}

// StatusOf is the HTTP status of the answer err reports, 0 when err is not
// an answer (nil, or a connection that failed).
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// Do sends in (JSON-encoded, unless nil) to path and decodes a 2xx answer
// into out (unless nil). contentType defaults to application/json; a patch
// names its own.
func (c *Client) Do(ctx context.Context, method, path, contentType string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		if contentType == "" {
			contentType = "application/json"
		}
		req.Header.Set("Content-Type", contentType)
	}
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		// A Status object says what went wrong; else the raw text.
		var st struct{ Message string }
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &st) == nil && st.Message != "" {
			msg = st.Message
		}
		return &Error{Method: method, Path: path, Status: resp.StatusCode, Message: msg}
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}
