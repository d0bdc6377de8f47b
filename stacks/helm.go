package stacks

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Helm 3 keeps each revision of a release in a Secret of this type, named
// sh.helm.release.v1.<release>.v<revision> and labelled owner=helm,
// name=<release>, status=<status>, version=<revision>.
const helmSecretType = "helm.sh/release.v1"

// Helm release statuses (helm.sh/helm/v3/pkg/release).
const (
	helmDeployed       = "deployed"
	helmFailed         = "failed"
	helmPendingInstall = "pending-install"
	helmPendingUpgrade = "pending-upgrade"
)

// helmRelease is one revision of a Helm release, as Helm recorded it.
type helmRelease struct {
	Name, Namespace string
	Revision        int
	Status          string
	Chart           string // chart name
	ChartVersion    string
	AppVersion      string
	// Secret is the record's name.
	Secret string
}

// pending reports whether Helm was in the middle of an operation on it.
func (r *helmRelease) pending() bool { return strings.HasPrefix(r.Status, "pending-") }

// helmReleases returns every recorded revision of the release name in
// namespace, newest last.
func helmReleases(ctx context.Context, cs kubernetes.Interface, namespace, name string) ([]*helmRelease, error) {
	list, err := cs.CoreV1().Secrets(namespace).List(ctx, metav1.ListOptions{
		LabelSelector: "owner=helm,name=" + name,
		FieldSelector: "type=" + helmSecretType,
	})
	if err != nil {
		return nil, fmt.Errorf("read the Helm records of %s/%s: %w", namespace, name, err)
	}
	var out []*helmRelease
	for _, s := range list.Items {
		r, err := decodeHelmRelease(s.Data["release"])
		if err != nil {
			return nil, fmt.Errorf("the Helm record %s/%s: %w", namespace, s.Name, err)
		}
		r.Secret = s.Name
		if r.Namespace == "" {
			r.Namespace = namespace
		}
		if r.Revision == 0 {
			r.Revision, _ = strconv.Atoi(s.Labels["version"])
		}
		out = append(out, r)
	}
	for i := 1; i < len(out); i++ { // few revisions: insertion sort
		for j := i; j > 0 && out[j].Revision < out[j-1].Revision; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out, nil
}

// latestHelmRelease is the newest revision of a release, or nil when Helm
// has no record of it.
func latestHelmRelease(ctx context.Context, cs kubernetes.Interface, namespace, name string) (*helmRelease, error) {
	all, err := helmReleases(ctx, cs, namespace, name)
	if err != nil || len(all) == 0 {
		return nil, err
	}
	return all[len(all)-1], nil
}

// decodeHelmRelease reads a record's release field: base64 of the
// gzipped JSON of the release (Helm's own encoding, inside the Secret's).
func decodeHelmRelease(data []byte) (*helmRelease, error) {
	raw, err := base64.StdEncoding.DecodeString(string(data))
	if err != nil {
		return nil, fmt.Errorf("release is not base64: %w", err)
	}
	if len(raw) > 3 && bytes.Equal(raw[:3], []byte{0x1f, 0x8b, 0x08}) {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, err
		}
		if raw, err = io.ReadAll(io.LimitReader(zr, 64<<20)); err != nil {
			return nil, err
		}
	}
	var rel struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
		Version   int    `json:"version"`
		Info      struct {
			Status string `json:"status"`
		} `json:"info"`
		Chart struct {
			Metadata struct {
				Name       string `json:"name"`
				Version    string `json:"version"`
				AppVersion string `json:"appVersion"`
			} `json:"metadata"`
		} `json:"chart"`
	}
	if err := json.Unmarshal(raw, &rel); err != nil {
		return nil, fmt.Errorf("release is not Helm's JSON: %w", err)
	}
	return &helmRelease{
		Name: rel.Name, Namespace: rel.Namespace, Revision: rel.Version, Status: rel.Info.Status,
		Chart: rel.Chart.Metadata.Name, ChartVersion: rel.Chart.Metadata.Version, AppVersion: rel.Chart.Metadata.AppVersion,
	}, nil
}
