package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/homelab/rack/internal/fakek3s/cpfile"
	"github.com/homelab/rack/internal/jsonapi"
)

// Node passwords, as k3s keeps them (k3s' pkg/nodepassword): every node has
// a random password in /etc/rancher/node/password (made on its first start,
// 0600), and the cluster keeps its hash in the Secret
// kube-system/<node>.node-password.k3s (type k3s.cattle.io/node-password,
// immutable). When a node asks for its kubelet certificate, the server
// creates that Secret if it is missing and otherwise compares: an agent
// whose password does not match is refused, and keeps retrying, with
//
//	Node password rejected, duplicate hostname or contents of
//	'/etc/rancher/node/password' may not match server node-passwd entry, …
//
// A server checks its own node's password against its local file, so a
// mismatch there is only a warning. Once the Node exists the Secret gets
// an OwnerReference to it, so deleting the Node garbage-collects the
// Secret. After a cluster reset the first normal start deletes the node's
// own Secret (the restored one may hold another password) and the
// reset-flag. The fake stores a sha256 of the password where k3s stores an
// scrypt hash; rack never reads either.

const (
	nodePasswordDir  = "/etc/rancher/node"
	nodePasswordType = "k3s.cattle.io/node-password"
)

// errNodePasswordRejected is k3s' message for a node whose password does
// not match its Secret.
//
//lint:ignore ST1005 k3s' own message, verbatim
var errNodePasswordRejected = errors.New("Node password rejected, duplicate hostname or contents of '/etc/rancher/node/password' may not match server node-passwd entry, try enabling a unique node name with the --with-node-id flag")

func nodePasswordSecret(node string) string { return strings.ToLower(node + ".node-password.k3s") }

// localNodePassword reads the node's password, making one on first use.
func localNodePassword() (string, error) {
	p := filepath.Join(nodePasswordDir, "password")
	if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) != "" {
		return strings.TrimSpace(string(b)), nil
	}
	if err := os.MkdirAll(nodePasswordDir, 0o700); err != nil {
		return "", err
	}
	pass := randomHex(16)
	if err := writeFile(p, []byte(pass+"\n"), 0o600); err != nil {
		return "", err
	}
	return pass, nil
}

func passwordHash(pass string) string { return "sha256:" + sha256Hex([]byte(pass)) }

type secretObject struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   map[string]any    `json:"metadata"`
	Type       string            `json:"type,omitempty"`
	Immutable  *bool             `json:"immutable,omitempty"`
	Data       map[string][]byte `json:"data,omitempty"`
}

func secretPath(node string) string {
	return "/api/v1/namespaces/" + clusterNamespace + "/secrets/" + nodePasswordSecret(node)
}

// ensureNodePassword creates the node's password Secret, or checks the
// password against it.
func ensureNodePassword(ctx context.Context, api *jsonapi.Client, node, pass string) error {
	var sec secretObject
	err := api.Do(ctx, http.MethodGet, secretPath(node), "", nil, &sec)
	if jsonapi.StatusOf(err) == http.StatusNotFound {
		yes := true
		obj := secretObject{APIVersion: "v1", Kind: "Secret",
			Metadata:  map[string]any{"name": nodePasswordSecret(node), "namespace": clusterNamespace},
			Type:      nodePasswordType,
			Immutable: &yes,
			Data:      map[string][]byte{"hash": []byte(passwordHash(pass))}}
		err = api.Do(ctx, http.MethodPost, "/api/v1/namespaces/"+clusterNamespace+"/secrets", "", obj, nil)
		if jsonapi.StatusOf(err) != http.StatusConflict {
			return err
		}
		err = api.Do(ctx, http.MethodGet, secretPath(node), "", nil, &sec)
	}
	if err != nil {
		return err
	}
	if string(sec.Data["hash"]) != passwordHash(pass) {
		return errNodePasswordRejected
	}
	return nil
}

// checkNodePassword is what k3s' supervisor does before it hands a node its
// kubelet certificate (apiBase is the server the node uses). An agent waits
// here, retrying, as long as its password is rejected.
func checkNodePassword(ctx context.Context, cp *cpfile.ControlPlane, apiBase, dataDir, node string, isServer bool, log *logger) error {
	pass, err := localNodePassword()
	if err != nil {
		return fmt.Errorf("unable to read node password file: %w", err)
	}
	api, err := newAPIClient(apiBase, cp)
	if err != nil {
		return err
	}
	if isServer {
		log.infof("Password verified locally for node %s", node)
		go serverNodePassword(ctx, api, dataDir, node, pass, log)
		return nil
	}
	if err := retry(ctx, log, "retrieve agent configuration; server is not ready", func() error {
		return ensureNodePassword(ctx, api, node, pass)
	}); err != nil {
		return err
	}
	go ownNodePassword(ctx, api, node, log)
	return nil
}

// serverNodePassword ensures a server's own Secret once its API server is
// up; after a cluster reset it first deletes the restored one, then the
// reset-flag.
func serverNodePassword(ctx context.Context, api *jsonapi.Client, dataDir, node, pass string, log *logger) {
	flag := filepath.Join(dataDir, "server", "db", resetFlagName)
	if _, err := os.Stat(flag); err == nil {
		err := retry(ctx, log, "delete the node password secret after a cluster reset", func() error {
			err := api.Do(ctx, http.MethodDelete, secretPath(node), "", nil, nil)
			if jsonapi.StatusOf(err) == http.StatusNotFound {
				return nil
			}
			return err
		})
		if err != nil {
			return
		}
		_ = os.Remove(flag)
		log.infof("Cluster reset complete: removed %s and the node password secret of %s", flag, node)
	}
	err := retry(ctx, log, "ensure the node password secret", func() error {
		err := ensureNodePassword(ctx, api, node, pass)
		if errors.Is(err, errNodePasswordRejected) {
			log.warnf("Deferred node password secret validation failed: %v", err)
			return nil
		}
		return err
	})
	if err == nil {
		ownNodePassword(ctx, api, node, log)
	}
}

// ownNodePassword makes the node the owner of its password Secret once the
// Node exists, so that deleting the Node deletes the Secret.
func ownNodePassword(ctx context.Context, api *jsonapi.Client, node string, log *logger) {
	_ = retry(ctx, log, "own the node password secret of "+node, func() error {
		var n struct {
			Metadata struct{ UID string } `json:"metadata"`
		}
		if err := api.Do(ctx, http.MethodGet, "/api/v1/nodes/"+node, "", nil, &n); err != nil {
			return err
		}
		var sec struct {
			Metadata struct {
				OwnerReferences []struct{ UID string } `json:"ownerReferences"`
			} `json:"metadata"`
		}
		if err := api.Do(ctx, http.MethodGet, secretPath(node), "", nil, &sec); err != nil {
			return err
		}
		for _, r := range sec.Metadata.OwnerReferences {
			if r.UID == n.Metadata.UID {
				return nil
			}
		}
		patch := map[string]any{"metadata": map[string]any{"ownerReferences": []map[string]any{
			{"apiVersion": "v1", "kind": "Node", "name": node, "uid": n.Metadata.UID}}}}
		return api.Do(ctx, http.MethodPatch, secretPath(node), "application/merge-patch+json", patch, nil)
	})
}
