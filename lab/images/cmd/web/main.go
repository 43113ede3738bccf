// Command web is the lab's test workload: an HTTP server on port 8080 (both families) whose readiness the test sets.
//
//	GET  /         200, the pod's name (HOSTNAME)
//	GET  /healthz  200 while ready, 503 after POST /unready (the readiness probe's path)
//	POST /unready  the next probes fail;  POST /ready  they pass again
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"sync/atomic"
)

func main() {
	var unready atomic.Bool
	http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, os.Getenv("HOSTNAME"))
	})
	http.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if unready.Load() {
			http.Error(w, "unready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	set := func(value bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost {
				http.Error(w, "POST only", http.StatusMethodNotAllowed)
				return
			}
			unready.Store(value)
			fmt.Fprintln(w, "ok")
		}
	}
	http.HandleFunc("/unready", set(true))
	http.HandleFunc("/ready", set(false))
	log.Fatal(http.ListenAndServe(":8080", nil))
}
