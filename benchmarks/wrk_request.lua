-- wrk script for benchmarks/run.py: sends one fixed request, prints the results as JSON.
--
--   wrk -t1 -c32 -d8s -s benchmarks/wrk_request.lua http://127.0.0.1:9000/ -- SPEC.lua
--
-- SPEC.lua (written by run.py) returns {method = ..., body = ... or nil, headers = {...}}: the
-- request, SigV4-signed once by run.py and valid for the whole run (the server allows 15 minutes
-- of clock skew), or unsigned (the bare app's GET, OpenBao transit's POSTs with X-Vault-Token),
-- sent as given. The path and query come from the URL on the command line.
--
-- No response() function on purpose: with none, wrk does not hand headers and bodies to Lua.
-- summary.errors.status counts responses with a status above 399; run.py reports those as
-- non-2xx and never counts them as throughput.

function init(args)
  if args[1] ~= nil then
    local spec = dofile(args[1])
    wrk.method = spec.method
    wrk.body = spec.body
    for name, value in pairs(spec.headers) do
      wrk.headers[name] = value
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "status_errors": %d, '
      .. '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, '
      .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "p999_us": %d, "mean_us": %.1f, '
      .. '"max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.status,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50.0), latency:percentile(90.0), latency:percentile(99.0),
    latency:percentile(99.9), latency.mean, latency.max))
end
