package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// Errors of WaitForUpdate.
var (
	// ErrUpdatePaused means the update being watched paused (its failure
	// action is pause, or it failed during a rollback).
	ErrUpdatePaused = errors.New("api: update paused")
	// ErrUpdateRolledBack means the update being watched failed and the
	// service was rolled back.
	ErrUpdateRolledBack = errors.New("api: update rolled back")
	// ErrNoUpdate means the service has no update to the version being
	// watched: the deploy did not change the task template (or created the
	// service), so no task is replaced.
	ErrNoUpdate = errors.New("api: no rolling update")
	// ErrCanariesWaiting means the update being watched started its
	// canaries and holds until they are promoted (the spec does not
	// auto-promote): it will not end by itself.
	ErrCanariesWaiting = errors.New("api: canaries wait for promotion")
)

// DeployResult is the answer to a deploy: the stored service, whether it
// was created, and warnings about a spec that was accepted as it is (see
// ServiceSpec.Warnings). The PUT response body is the Service with a
// "warnings" member added, so clients that decode a Service still work.
type DeployResult struct {
	Service
	// Warnings is advice about the accepted spec; empty when there is none.
	Warnings []string `json:"warnings,omitempty"`
	// Created reports whether the service is new (status 201); not part of
	// the body.
	Created bool `json:"-"`
}

// RollbackRequest is the body of POST /services/{name}/rollback.
type RollbackRequest struct {
	// To is the kept version whose spec the service goes back to; 0 (or
	// absent) means the previous spec (Service.PreviousSpec).
	To uint64 `json:"to,omitempty"`
}

// Deploy creates or updates the service name from a spec document, like
// DeployService, and returns the warnings the server gave too.
func (c *Client) Deploy(ctx context.Context, name string, doc []byte, contentType string) (DeployResult, error) {
	var out DeployResult
	if contentType == "" {
		contentType = "application/yaml"
	}
	path := "/services/" + url.PathEscape(name)
	resp, err := c.do(ctx, http.MethodPut, path, nil, bytes.NewReader(doc), contentType)
	if err != nil {
		return out, err
	}
	defer drainClose(resp.Body)
	if err := decodeBody(resp, &out); err != nil {
		return out, fmt.Errorf("api: PUT %s: %w", path, err)
	}
	out.Created = resp.StatusCode == http.StatusCreated
	return out, nil
}

// Versions returns the kept versions of a service, newest first.
func (c *Client) Versions(ctx context.Context, name string) ([]ServiceVersion, error) {
	var out []ServiceVersion
	err := c.doJSON(ctx, http.MethodGet, "/services/"+url.PathEscape(name)+"/versions", nil, nil, &out)
	return out, err
}

// Rollback puts the spec of kept version to (0: the previous spec) back as
// a new version of the service and starts rolling its tasks back. It drops
// canaries that wait for promotion.
func (c *Client) Rollback(ctx context.Context, name string, to uint64) (Service, error) {
	var out Service
	err := c.doJSON(ctx, http.MethodPost, "/services/"+url.PathEscape(name)+"/rollback", nil, RollbackRequest{To: to}, &out)
	return out, err
}

// Promote lets an update whose canaries wait for promotion carry on.
func (c *Client) Promote(ctx context.Context, name string) (Service, error) {
	var out Service
	err := c.doJSON(ctx, http.MethodPost, "/services/"+url.PathEscape(name)+"/promote", nil, nil, &out)
	return out, err
}

// Resume continues a paused update or rollback.
func (c *Client) Resume(ctx context.Context, name string) (Service, error) {
	var out Service
	err := c.doJSON(ctx, http.MethodPost, "/services/"+url.PathEscape(name)+"/resume", nil, nil, &out)
	return out, err
}

// UpdateEnded reports whether an update in state state has ended: completed,
// paused (until resumed) or rolled back.
func UpdateEnded(state string) bool {
	switch state {
	case UpdateCompleted, UpdatePaused, UpdateRolledBack:
		return true
	}
	return false
}

// WaitForUpdate polls the service every interval until the update to
// version (or a later one, such as the automatic rollback of it) ends, and
// calls progress (if not nil) with every service it reads. It returns the
// last service read and nil when the update completed, an error wrapping
// ErrUpdatePaused or ErrUpdateRolledBack (with the server's reason) when it
// did not, ErrNoUpdate when the service has no update to version or later
// at all, or ctx's error.
func (c *Client) WaitForUpdate(ctx context.Context, name string, version uint64, interval time.Duration, progress func(Service)) (Service, error) {
	if interval <= 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		svc, err := c.GetService(ctx, name)
		if err != nil {
			return svc, err
		}
		if progress != nil {
			progress(svc)
		}
		st := svc.UpdateStatus
		if st == nil || st.ToVersion < version {
			return svc, fmt.Errorf("%w of service %s to version %d", ErrNoUpdate, name, version)
		}
		switch st.State {
		case UpdateCompleted:
			return svc, nil
		case UpdatePaused:
			return svc, fmt.Errorf("%w: service %s: %s", ErrUpdatePaused, name, reason(st))
		case UpdateRolledBack:
			return svc, fmt.Errorf("%w: service %s: %s", ErrUpdateRolledBack, name, reason(st))
		case UpdateCanary:
			if svc.Spec.Update == nil || !svc.Spec.Update.AutoPromote {
				return svc, fmt.Errorf("%w: service %s", ErrCanariesWaiting, name)
			}
		}
		select {
		case <-ctx.Done():
			return svc, ctx.Err()
		case <-t.C:
		}
	}
}

func reason(st *UpdateStatus) string {
	if st.Message != "" {
		return st.Message
	}
	return "no reason given"
}

// Restart replaces every task of a service by a rolling update without
// another change to its spec (a new version with task.force_update raised).
func (c *Client) Restart(ctx context.Context, name string) (Service, error) {
	var out Service
	err := c.doJSON(ctx, http.MethodPost, "/services/"+url.PathEscape(name)+"/restart", nil, nil, &out)
	return out, err
}

// PlanDeploy asks the server what deploying doc as service name would do,
// without doing it: the spec is checked as a deploy checks it (a refusal is
// the same *Error), and nothing is stored.
func (c *Client) PlanDeploy(ctx context.Context, name string, doc []byte, contentType string) (DeployPlan, error) {
	var out DeployPlan
	if contentType == "" {
		contentType = "application/yaml"
	}
	path := "/services/" + url.PathEscape(name)
	resp, err := c.do(ctx, http.MethodPut, path, url.Values{"dry_run": {"true"}}, bytes.NewReader(doc), contentType)
	if err != nil {
		return out, err
	}
	defer drainClose(resp.Body)
	if err := decodeBody(resp, &out); err != nil {
		return out, fmt.Errorf("api: PUT %s?dry_run=true: %w", path, err)
	}
	return out, nil
}
