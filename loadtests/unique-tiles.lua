-- wrk script: every request asks for a different zoom-10 tile near the set, in a fixed
-- order, so two runs render the same tiles. Use with -t1 (the counter and the file are per
-- thread). Rows 281 to 742 (the band that holds the set), 460 tiles each: after 212,520
-- requests the walk starts again from the first tile (those requests are then cache hits,
-- which a miss-latency run of that length would report as such).
-- Optional arguments after `--`: the tile to start after (default 0, the first), and a file
-- to which every response's status and Server-Timing header are written, a line each ("-"
-- where there was none).
counter = 0
log = nil
init = function(args)
  counter = tonumber(args[1]) or 0
  if args[2] then
    log = assert(io.open(args[2], "w"))
    log:setvbuf("line") -- wrk never closes a thread's Lua state: flush every line
  end
end
request = function()
  counter = counter + 1
  local x = 320 + counter % 460
  local y = 281 + math.floor(counter / 460) % 462
  return wrk.format("GET", "/tiles/10/" .. x .. "/" .. y .. ".png")
end
response = function(status, headers, body)
  if log then
    log:write(status, "\t", headers["server-timing"] or headers["Server-Timing"] or "-", "\n")
  end
end
