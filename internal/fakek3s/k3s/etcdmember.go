package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/homelab/rack/internal/jsonapi"
)

// k3s' managed etcd controllers (k3s' pkg/etcd, metadata_controller.go and
// member_controller.go), which every server running etcd runs at once:
//
//   - the metadata controller puts the etcd, control-plane and master labels
//     on the server's own Node, and annotations naming its etcd member and
//     the member's address (etcd.k3s.cattle.io/node-name, node-address);
//   - the member controller is a wrangler OnRemove handler: it keeps the
//     finalizer wrangler.cattle.io/managed-etcd-controller on Nodes, and when
//     such a Node with the etcd label is deleted it removes the member whose
//     name and peer address are the annotations' (etcd.RemovePeer, its own
//     member included; a missing member is no error), then the finalizer, so
//     the Node goes. Without the annotations it fails and keeps the
//     finalizer, as k3s does.
//
// rack relies on this: `rack node remove` deletes a server's Node and waits
// for its member to go. The fake polls the Nodes where k3s watches them.
// Where it differs: wrangler puts the finalizer on every Node, the fake only
// on Nodes with the etcd label (servers'; an agent's Node needs no etcd
// server to go away), and the remove annotation
// (etcd.k3s.cattle.io/remove) is not implemented.
//
// Only a Node's deletion removes a member, and only a started one: a member
// that has not joined yet has no name in etcd, so no Node names it.

const (
	etcdNameAnnotation    = "etcd.k3s.cattle.io/node-name"
	etcdAddressAnnotation = "etcd.k3s.cattle.io/node-address"
	etcdFinalizer         = "wrangler.cattle.io/managed-etcd-controller"
	etcdRoleLabel         = "node-role.kubernetes.io/etcd"
)

// etcdControllers runs the metadata and member controllers until ctx ends.
func (s *server) etcdControllers(ctx context.Context, admin *jsonapi.Client, etcdctlBin string) {
	go func() {
		last := ""
		for {
			err := s.syncNodes(ctx, admin, etcdctlBin)
			// Each new failure is logged once, not on every pass.
			if msg := fmt.Sprint(err); msg != last && ctx.Err() == nil {
				if err != nil {
					s.log.warnf("managed etcd controller: %v", err)
				}
				last = msg
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}()
}

// syncNodes makes one pass over the Nodes. Updates carry the Node's
// resourceVersion: a conflict with another server's controller is retried
// on the next pass.
func (s *server) syncNodes(ctx context.Context, admin *jsonapi.Client, etcdctlBin string) error {
	var list struct {
		Items []map[string]any `json:"items"`
	}
	if err := admin.Do(ctx, http.MethodGet, "/api/v1/nodes", "", nil, &list); err != nil {
		return err
	}
	var errs []string
	for _, n := range list.Items {
		if err := s.syncNode(ctx, admin, etcdctlBin, n); err != nil && jsonapi.StatusOf(err) != http.StatusConflict && jsonapi.StatusOf(err) != http.StatusNotFound {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

func (s *server) syncNode(ctx context.Context, admin *jsonapi.Client, etcdctlBin string, n map[string]any) error {
	md := subMap(n, "metadata")
	name, _ := md["name"].(string)
	labels, annotations := subMap(md, "labels"), subMap(md, "annotations")
	var finalizers []any
	has := false
	current, _ := md["finalizers"].([]any)
	for _, f := range current {
		if f == etcdFinalizer {
			has = true
		} else {
			finalizers = append(finalizers, f)
		}
	}
	_, etcdNode := labels[etcdRoleLabel]
	deleting := md["deletionTimestamp"] != nil
	changed := false
	switch {
	case deleting && has:
		if etcdNode {
			member, _ := annotations[etcdNameAnnotation].(string)
			address, _ := annotations[etcdAddressAnnotation].(string)
			if member == "" || address == "" {
				return fmt.Errorf("node name or address annotation for node %s not found", name)
			}
			if err := s.removePeer(ctx, etcdctlBin, member, address); err != nil {
				return err
			}
		}
		md["finalizers"], changed = finalizers, true
	case deleting:
		// Not ours to hold (or already let go): nothing to do.
	default:
		if name == s.nodeName {
			// The metadata controller: this server's own Node names its member.
			want := map[string]string{etcdNameAnnotation: s.nodeName, etcdAddressAnnotation: s.nodeIP}
			for k, v := range want {
				if annotations[k] != v {
					annotations[k], changed = v, true
				}
			}
			for _, k := range []string{etcdRoleLabel, "node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"} {
				if labels[k] != "true" {
					labels[k], changed = "true", true
				}
			}
			etcdNode = true
		}
		// Every Node, agents too, as wrangler's OnRemove does for k3s: its
		// deletion waits for a server's controller.
		if !has {
			md["finalizers"], changed = append(finalizers, etcdFinalizer), true
		}
	}
	if !changed {
		return nil
	}
	n["apiVersion"], n["kind"] = "v1", "Node"
	return admin.Do(ctx, http.MethodPut, "/api/v1/nodes/"+name, "", n, nil)
}

// removePeer removes the started member of that name whose peer URL is on
// address, as k3s' RemovePeer does, through the local etcd.
func (s *server) removePeer(ctx context.Context, etcdctlBin, name, address string) error {
	endpoint := s.etcdURL("127.0.0.1", etcdClientPort)
	members, err := etcdMembers(ctx, etcdctlBin, endpoint)
	if err != nil {
		return err
	}
	for _, m := range members {
		if m.name != name {
			continue
		}
		for _, p := range strings.Split(m.peer, ",") {
			if u, err := url.Parse(p); err != nil || u.Hostname() != address {
				continue
			}
			s.log.infof("Removing name=%s id=%s address=%s from etcd", m.name, m.id, address)
			out, err := etcdctl(ctx, etcdctlBin, endpoint, "member", "remove", m.id)
			if err != nil && !strings.Contains(out, "member not found") {
				return fmt.Errorf("etcd member remove %s: %v: %s", m.id, err, out)
			}
			return nil
		}
	}
	return nil
}
