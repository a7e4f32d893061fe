"""The one pygame viewer that watch, replay, play and versus share: the game frame scaled, a side panel, keys.

    viewer = Viewer("Pong", frame_shape=(210, 160, 3), scale=3, mode="watch", n_bars=2, view_shapes=[(80, 80)])
    reason = run(viewer, session, fps=15)         # the loop: keys, session.advance(), draw, pace

A session (scripts/watch.py, replay.py, play.py, versus.py) owns the game; the viewer owns the window
and the loop. A session has `fps` (real-time speed), `frame()` -> (H, W, 3) uint8, `panel()` -> dict,
`advance(held)` -> False when it has nothing more to show, `command(name, paused)` -> a status line or
None for the keys only it understands, `hold_at_end` and `close()`. Panel dict: title (str); lines
[(label, text)]; bars {title, labels, values (A,), kind "prob" | "q" | "action", chosen} or None; view
{title, tiles [2-D arrays], kind "diff" (values -1/0/1) | "gray" (uint8)} or None; status (str).
Headless: run(max_frames=, keys=) stops after so many frames and injects key presses as pygame events
({frame: ["space", "+up", "-up"]}: a bare name taps, +name holds, -name releases); tests read the
window's pixels through `viewer.surface` and `viewer.rects`. Only scripts/ import pygame.
"""
import os
import sys

import numpy as np

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

PANEL_WIDTH = 360
MARGIN = 10
BAR_HEIGHT = 14
BAR_GAP = 4
LABEL_WIDTH = 96
VALUE_WIDTH = 64
BACKGROUND = (24, 24, 28)
PANEL_BACKGROUND = (36, 38, 44)
TEXT = (225, 225, 225)
DIM = (150, 150, 160)
BAR = (70, 120, 180)
CHOSEN = (245, 160, 40)
ALERT = (230, 70, 60)
DIFF_COLORS = np.array([[220, 80, 60], [0, 0, 0], [255, 255, 255]], np.uint8)  # diff -1, 0, +1
MAX_VIEW_SCALE = 4
SPEED_LIMITS = (1.0, 1920.0)

NO_DISPLAY = ("no display: set SDL_VIDEODRIVER=dummy to run without a window (nothing is shown), "
              "or run on a desktop or under Xvfb")

# key name (pygame.key.name spelling) -> command, per program
COMMON_KEYS = {"+": "faster", "=": "faster", "keypad +": "faster", "-": "slower", "keypad -": "slower",
               "escape": "quit", "q": "quit"}
KEYMAPS = {
    "watch": {**COMMON_KEYS, "space": "pause", "right": "step", "r": "record"},
    "replay": {**COMMON_KEYS, "space": "pause", "right": "forward", "left": "back", "n": "next",
               "p": "previous"},
    "play": {**COMMON_KEYS, "p": "pause", "pause": "pause"},  # Space is FIRE here
}
HELD_KEYS = {"play": ("up", "down", "left", "right", "space")}
HELP = {
    "watch": "Space pause  Right step  +/- speed  R record  Q quit",
    "replay": "Space pause  Left/Right seek  N/P game  +/- speed  Q quit",
    "play": "arrows move  Space fire  P pause  +/- speed  Q quit",
}


class NoDisplayError(RuntimeError):
    """No window can be opened; the message says what to do."""


def check_display(hint=""):
    """Raise NoDisplayError when no window can open. pygame would silently pick its 'offscreen'
    driver (FACTS.md), so look at the environment before pygame does."""
    if os.environ.get("SDL_VIDEODRIVER"):
        return
    if sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")) and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise NoDisplayError(NO_DISPLAY + hint)


def import_pygame():
    try:
        import pygame
    except ImportError:
        raise ImportError("the viewer needs pygame: pip install pygame") from None
    return pygame


def fit_scale(tiles, width, columns):
    """Largest integer zoom (at most MAX_VIEW_SCALE) that puts `columns` tiles side by side in width."""
    tile_w = max(t.shape[1] for t in tiles)
    return int(max(1, min(MAX_VIEW_SCALE, (width - (columns - 1) * 4) // (columns * tile_w))))


def view_rgb(tile, kind):
    """A network input tile as (H, W, 3) uint8: diffs in three colours, gray frames as gray."""
    if kind == "diff":
        return DIFF_COLORS[np.clip(np.rint(tile), -1, 1).astype(np.int64) + 1]  # (H, W, 3)
    gray = np.asarray(tile, np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)  # (H, W, 3)


def bar_spans(values, kind, width):
    """(starts, lengths, zero) of the bars in pixels from the left of the bar area. Probabilities fill
    from the left in proportion. Q-values stand on one honest scale from zero: the axis spans 0 and
    every value of the row, each bar runs from the zero line (`zero`) to its value, so 0.559 and 0.572
    look nearly alike, as they are, and a negative value points left. (Min-max scaling drew them as
    empty and full.)"""
    v = np.asarray(values, np.float64)
    if kind != "q":
        return np.zeros(len(v), int), np.rint(np.clip(v, 0.0, 1.0) * width).astype(int), 0
    lo, hi = min(0.0, float(v.min(initial=0.0))), max(0.0, float(v.max(initial=0.0)))
    if hi - lo < 1e-12:
        return np.zeros(len(v), int), np.zeros(len(v), int), 0
    zero = int(round(-lo / (hi - lo) * width))
    ends = np.rint((v - lo) / (hi - lo) * width).astype(int)
    return np.minimum(ends, zero), np.abs(ends - zero), zero


class Viewer:
    """A window: the game frame at `scale` on the left, the panel on the right."""

    def __init__(self, title, frame_shape, scale, mode, n_bars=0, view_shapes=(), panel_width=PANEL_WIDTH):
        if mode not in KEYMAPS:
            raise ValueError(f"mode must be one of {', '.join(KEYMAPS)}, got {mode!r}")
        if int(scale) < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        pg = self.pg = import_pygame()
        pg.display.init()  # not pygame.init(): that also opens the sound mixer (ALSA warnings)
        pg.font.init()
        if pg.display.get_driver() == "offscreen" and os.environ.get("SDL_VIDEODRIVER") != "offscreen":
            pg.display.quit()
            raise NoDisplayError(NO_DISPLAY)
        # nobody can press a key in a window nothing shows (SDL's dummy or offscreen driver)
        self.headless = pg.display.get_driver() in ("dummy", "offscreen")
        self.mode, self.scale = mode, int(scale)
        self.keymap = {pg.key.key_code(name): cmd for name, cmd in KEYMAPS[mode].items()}
        self.held_names = {pg.key.key_code(name): name for name in HELD_KEYS.get(mode, ())}
        self.held = set()
        self.font = pg.font.Font(None, 20)
        self.small = pg.font.Font(None, 17)
        self.line = self.font.get_linesize() + 2
        fh, fw = frame_shape[:2]
        game = pg.Rect(0, 0, fw * self.scale, fh * self.scale)
        x, inner = game.width + MARGIN, panel_width - 2 * MARGIN
        y = MARGIN + 8 * self.line  # title, up to six lines, status
        bars = pg.Rect(x, y, inner, self.line + n_bars * (BAR_HEIGHT + BAR_GAP)) if n_bars else pg.Rect(x, y, 0, 0)
        y = bars.bottom + MARGIN
        view = pg.Rect(x, y, 0, 0)
        if view_shapes:
            columns = 2 if len(view_shapes) == 4 else len(view_shapes)
            self.view_scale = fit_scale([np.empty(s) for s in view_shapes], inner, columns)
            rows = -(-len(view_shapes) // columns)
            th, tw = max(s[0] for s in view_shapes), max(s[1] for s in view_shapes)
            view = pg.Rect(x, y + self.line, columns * (tw * self.view_scale + 4) - 4,
                           rows * (th * self.view_scale + 4) - 4)
            y = view.bottom + MARGIN
        height = max(game.height, y + self.line + MARGIN)
        self.rects = {"game": game, "panel": pg.Rect(game.width, 0, panel_width, height), "bars": bars,
                      "view": view}
        self.surface = pg.display.set_mode((game.width + panel_width, height))
        pg.display.set_caption(title)
        self._small_frame = None
        self._big_frame = pg.Surface(game.size, depth=32)

    # ------------------------------------------------------------------ events

    def press(self, items):
        """Post scripted keys as real events: 'space' taps, '+up' holds, '-up' releases."""
        pg = self.pg
        for item in items:
            kind, name = (item[0], item[1:]) if item[:1] in ("+", "-") and len(item) > 1 else ("tap", item)
            key = pg.key.key_code(name)
            if kind in ("tap", "+"):
                pg.event.post(pg.event.Event(pg.KEYDOWN, key=key, mod=0, unicode=name if len(name) == 1 else ""))
            if kind in ("tap", "-"):
                pg.event.post(pg.event.Event(pg.KEYUP, key=key, mod=0))

    def handle_events(self):
        """Commands from the keys pressed since the last call; `held` tracks the movement keys."""
        pg, commands = self.pg, []
        for event in pg.event.get():
            if event.type == pg.QUIT:
                commands.append("quit")
            elif event.type == pg.KEYDOWN:
                if event.key in self.held_names:
                    self.held.add(self.held_names[event.key])
                elif event.key in self.keymap:
                    commands.append(self.keymap[event.key])
                elif getattr(event, "unicode", "") == "+":  # '+' typed on a layout without a + key
                    commands.append("faster")
            elif event.type == pg.KEYUP and event.key in self.held_names:
                self.held.discard(self.held_names[event.key])
        return commands

    # ------------------------------------------------------------------ drawing

    def draw(self, frame, panel):
        """Draw one frame and the panel, then show them."""
        pg, surface = self.pg, self.surface
        surface.fill(BACKGROUND)
        frame = np.asarray(frame, np.uint8)  # (H, W, 3)
        if self._small_frame is None or self._small_frame.get_size() != (frame.shape[1], frame.shape[0]):
            self._small_frame = pg.Surface((frame.shape[1], frame.shape[0]), depth=32)
            self._big_frame = pg.Surface((frame.shape[1] * self.scale, frame.shape[0] * self.scale), depth=32)
        pg.surfarray.blit_array(self._small_frame, frame.swapaxes(0, 1))
        pg.transform.scale(self._small_frame, self._big_frame.get_size(), self._big_frame)  # exact at integer zoom
        surface.blit(self._big_frame, (0, 0))
        surface.fill(PANEL_BACKGROUND, self.rects["panel"])
        self._draw_text(panel)
        if panel.get("bars") and self.rects["bars"].height:
            self._draw_bars(panel["bars"])
        if panel.get("view") and self.rects["view"].width:
            self._draw_view(panel["view"])
        pg.display.flip()

    def _text(self, text, pos, color=TEXT, font=None):
        image = (font or self.font).render(str(text), True, color)
        self.surface.blit(image, pos)
        return image.get_width()

    def _draw_text(self, panel):
        x, y = self.rects["panel"].x + MARGIN, MARGIN
        self._text(panel.get("title", ""), (x, y), CHOSEN)
        for label, text in panel.get("lines", [])[:6]:
            y += self.line
            self._text(label, (x, y), DIM)
            self._text(text, (x + 70, y))
        y = MARGIN + 7 * self.line
        status = panel.get("status", "")
        self._text(status, (x, y), ALERT if "REC" in status else TEXT, self.small)
        self._text(HELP[self.mode], (x, self.rects["panel"].bottom - self.line), DIM, self.small)

    def _draw_bars(self, bars):
        pg, r = self.pg, self.rects["bars"]
        self._text(bars.get("title", ""), (r.x, r.y), DIM)
        width = r.width - LABEL_WIDTH - VALUE_WIDTH
        values = np.asarray(bars["values"], np.float64)
        starts, lengths, zero = bar_spans(values, bars.get("kind", "prob"), width)
        chosen = bars.get("chosen")
        for i, (label, value, start, length) in enumerate(zip(bars["labels"], values, starts, lengths)):
            y = r.y + self.line + i * (BAR_HEIGHT + BAR_GAP)
            mine = chosen is not None and i == int(chosen)
            color = CHOSEN if mine else BAR
            self._text(("> " if mine else "  ") + str(label)[:11], (r.x, y), color if mine else TEXT, self.small)
            pg.draw.rect(self.surface, (55, 58, 66), (r.x + LABEL_WIDTH, y, width, BAR_HEIGHT))
            if length > 0:
                pg.draw.rect(self.surface, color, (r.x + LABEL_WIDTH + int(start), y, int(length), BAR_HEIGHT))
            if bars.get("kind") == "q":  # the zero line the bars stand on
                x = r.x + LABEL_WIDTH + zero
                pg.draw.line(self.surface, DIM, (x, y), (x, y + BAR_HEIGHT - 1))
            text = f"{value:.2f}" if bars.get("kind") == "prob" else f"{value:+.3f}" if bars.get("kind") == "q" else ""
            self._text(text, (r.x + LABEL_WIDTH + width + 6, y), TEXT, self.small)

    def _draw_view(self, view):
        pg, r = self.pg, self.rects["view"]
        self._text(view.get("title", ""), (r.x, r.y - self.line), DIM)
        tiles = view["tiles"]
        columns = 2 if len(tiles) == 4 else len(tiles)
        s = self.view_scale
        for i, tile in enumerate(tiles):
            rgb = view_rgb(tile, view.get("kind", "gray"))  # (h, w, 3)
            small = pg.Surface((rgb.shape[1], rgb.shape[0]), depth=32)
            pg.surfarray.blit_array(small, rgb.swapaxes(0, 1))
            x = r.x + (i % columns) * (rgb.shape[1] * s + 4)
            y = r.y + (i // columns) * (rgb.shape[0] * s + 4)
            self.surface.blit(pg.transform.scale(small, (rgb.shape[1] * s, rgb.shape[0] * s)), (x, y))

    def close(self):
        self.pg.display.quit()


def run(viewer, session, fps, max_frames=None, keys=None, on_frame=None):
    """The loop: keys -> commands, advance the session unless paused, draw, keep the pace.

    fps 0 runs as fast as it can. Returns why it stopped: "done", "quit" or "max_frames".
    keys: {frame: [key, ...]} pressed before that frame is drawn; on_frame(viewer, session) after each.
    Ctrl-C stops it too ("interrupted"); the session and the window close whatever ends it."""
    try:
        return _loop(viewer, session, fps, max_frames, keys, on_frame)
    except KeyboardInterrupt:  # Ctrl-C: the session closes as on Q (play keeps the game cut short)
        return "interrupted"
    finally:
        session.close()
        viewer.close()


def _loop(viewer, session, fps, max_frames, keys, on_frame):
    """run()'s loop, until the session ends, Q, or max_frames."""
    clock = viewer.pg.time.Clock()
    paused, message, message_until, count = False, "", 0, 0
    fps = float(fps)

    def say(text):  # a message stays about three seconds
        nonlocal message, message_until
        message, message_until = text, count + int(3 * fps if fps > 0 else 90)

    while True:
        if keys and count in keys:
            viewer.press(keys[count])
        step = False
        for command in viewer.handle_events():
            if command == "quit":
                return "quit"
            if command == "pause":
                paused = not paused
            elif command == "step":
                step = paused
            elif command in ("faster", "slower"):
                fps = change_speed(fps, command == "faster")
            else:
                reply = session.command(command, paused)
                if reply:
                    say(reply)
        if not paused or step:
            if not session.advance(viewer.held):
                if not session.hold_at_end or (viewer.headless and keys is None and max_frames is None):
                    return "done"  # (a window nobody sees would wait for a key forever)
                paused = True
                say("the end: Left goes back, Q quits")
        if count >= message_until:
            message = ""
        viewer.draw(session.frame(), with_loop_state(session.panel(), clock.get_fps(), fps, paused, message))
        count += 1
        if on_frame:
            on_frame(viewer, session)
        if max_frames is not None and count >= max_frames:
            return "max_frames"
        if fps > 0:
            clock.tick(fps)  # sleeps to keep the pace
        else:
            clock.tick()  # only measures


def with_loop_state(panel, measured_fps, fps, paused, message):
    """The session's panel plus what the loop knows: the speed, PAUSED, the last message."""
    speed = "unlimited" if fps == 0 else f"{fps:g}/s"
    lines = [*panel.get("lines", []), ("fps", f"{measured_fps:5.1f}  target {speed}")]
    status = "  ".join(s for s in ("PAUSED" if paused else "", panel.get("status", ""), message) if s)
    return {**panel, "lines": lines, "status": status}


def change_speed(fps, faster):
    """Double or halve the target frames per second; from unlimited (0), slower goes to the cap."""
    if fps == 0:
        return 0.0 if faster else SPEED_LIMITS[1]
    lo, hi = SPEED_LIMITS
    return float(min(hi, max(lo, fps * 2 if faster else fps / 2)))
