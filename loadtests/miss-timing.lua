-- wrk script: unique-tiles.lua's walk (every request a different zoom-10 tile near the
-- set, in a fixed order), starting at the tile given as the first argument after `--`, and
-- every response's Server-Timing header appended to the file given as the second (one line
-- per response, "-" when there was none). Use with -t1 (the counter and the file are per
-- thread).
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
