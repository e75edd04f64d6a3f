-- wrk script: every request asks for a different zoom-10 tile near the set, in a fixed
-- order, so two runs render the same tiles. Use with -t1 (the counter is per thread).
-- Rows 281 to 742 (the band that holds the set), 460 tiles each: after 212,520 requests
-- the walk starts again from the first tile (those requests are then cache hits, which a
-- miss-latency run of that length would report as such).
counter = 0
request = function()
  counter = counter + 1
  local x = 320 + counter % 460
  local y = 281 + math.floor(counter / 460) % 462
  return wrk.format("GET", "/tiles/10/" .. x .. "/" .. y .. ".png")
end
