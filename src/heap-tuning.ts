/**
 * V8's allocation-site pretenuring is turned off for the gateway's process (main.ts imports this
 * module first, before anything has allocated much).
 *
 * Pretenuring is V8's guess that what a place in the code allocates will live long: once enough
 * of it has survived young-generation collections, that place allocates straight into the old
 * generation from then on, and the guess is rarely taken back. A gateway's requests make that
 * guess wrong and keep it: the first burst of requests that wait (sessions being opened, a slow
 * tool, a virtual server listing its members) survives a collection or two, and from then on
 * those places allocate in the old generation. Likely what made it costly: such an object, dead,
 * still points at the young objects of its request, and the young-generation collector takes
 * pointers from the old generation as live, so it keeps and promotes them, and only a full
 * collection frees them. Measured (docs/benchmarks.md, the 2026-12-01 06:20 entry): through a virtual
 * server, 18% of what a request allocates was promoted and collection cost 49-68 µs per
 * request; with pretenuring off, 2% and 11-13 µs. A tool taking 200 ms, 200 connections:
 * 426 -> 334-344 µs of gateway CPU per request. Requests that really live long are still
 * promoted, by the scavenger.
 *
 * The flag exists in every V8 the gateway runs on (Node 20 and the image's Node 26) and is read
 * when V8 weighs its feedback, so setting it at startup takes effect.
 */
import { setFlagsFromString } from 'node:v8'

setFlagsFromString('--no-allocation-site-pretenuring')
