# Shell helpers shared by scripts/influxdb1 and scripts/influxdb2 (sourced, not run).

# A free TCP port on 127.0.0.1 (bound, then released).
free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# Stop the server whose pid is in DIR/influxd.pid: SIGTERM, up to 10 s, then SIGKILL. No pid file: nothing to do.
stop_pidfile() {
  local dir=$1 pid
  [ -f "$dir/influxd.pid" ] || return 0
  pid=$(cat "$dir/influxd.pid")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
  fi
  rm -f "$dir/influxd.pid"
}
