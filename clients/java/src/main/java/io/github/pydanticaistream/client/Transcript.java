package io.github.pydanticaistream.client;

import com.google.protobuf.Struct;
import io.github.pydanticaistream.v1.Event;
import io.github.pydanticaistream.v1.EventKind;
import io.github.pydanticaistream.v1.EventType;
import io.github.pydanticaistream.v1.PartKind;
import io.github.pydanticaistream.v1.ToolOutcome;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Optional;
import java.util.OptionalInt;
import java.util.SortedMap;
import java.util.TreeMap;

/**
 * What a run has output so far, folded from its events with {@link #apply}; a resume drops what it
 * superseded. Not thread-safe: fold from the thread that listens.
 */
public final class Transcript {
  /**
   * A part of a node: a response part (with its {@code eventIdx}), or a tool return or retry prompt
   * (without). Strings the part's events did not carry are empty, as in {@link Event}.
   */
  public static final class Part {
    private final PartKind partKind;
    private final String partKindName;
    private final OptionalInt eventIdx;
    private final StringBuilder content;
    private final String toolName;
    private final String toolCallId;
    private final Struct args;
    private final ToolOutcome outcome;

    Part(Event start) {
      partKind = start.getPartKind();
      partKindName = start.getPartKindName();
      eventIdx = start.hasEventIdx() ? OptionalInt.of(start.getEventIdx()) : OptionalInt.empty();
      content = new StringBuilder(start.getContent());
      toolName = start.getToolName();
      toolCallId = start.getToolCallId();
      args = start.getArgs();
      outcome = start.getOutcome();
    }

    public PartKind partKind() {
      return partKind;
    }

    /** The part kind as written (e.g. "tool-call", "retry-prompt"). */
    public String partKindName() {
      return partKindName;
    }

    /** The part's index in its model response; empty for tool returns and retry prompts. */
    public OptionalInt eventIdx() {
      return eventIdx;
    }

    /** Text and thinking: the start's content and every delta since; tool returns: the value. */
    public String content() {
      return content.toString();
    }

    public String toolName() {
      return toolName;
    }

    public String toolCallId() {
      return toolCallId;
    }

    /** Tool calls: the complete arguments (empty for other parts). */
    public Struct args() {
      return args;
    }

    /** Tool returns that did not succeed: how they ended. */
    public ToolOutcome outcome() {
      return outcome;
    }
  }

  /**
   * A node (model request) of a run: its response parts in {@code eventIdx} order, then its tool
   * returns and retry prompts in arrival order.
   */
  public static final class Node {
    private final int idx;
    private final List<Part> parts;

    Node(int idx, List<Part> parts) {
      this.idx = idx;
      this.parts = Collections.unmodifiableList(parts);
    }

    public int idx() {
      return idx;
    }

    public List<Part> parts() {
      return parts;
    }
  }

  private static final class FoldedNode {
    final SortedMap<Integer, Part> response = new TreeMap<>();
    final List<Part> returns = new ArrayList<>();
  }

  private final SortedMap<Integer, FoldedNode> nodes = new TreeMap<>();
  private int attempt = 1;
  private String error;
  private boolean ended;

  /**
   * Folds one event in. Returns true when the event dropped output folded before (a resume that
   * superseded something), so a UI knows to render again from the transcript.
   */
  public boolean apply(Event event) {
    if (event.getType() == EventType.EVENT_TYPE_END) {
      ended = true;
    } else if (event.getType() == EventType.EVENT_TYPE_ERROR) {
      error = event.getBodyJson();
    }
    if (!event.hasIdx()) {
      return false; // begin, end, error, custom events: no node
    }
    int idx = event.getIdx();
    if (event.getKind() == EventKind.EVENT_KIND_RESUMED) {
      attempt = event.getAttempt();
      SortedMap<Integer, FoldedNode> superseded = nodes.tailMap(idx);
      boolean dropped = !superseded.isEmpty();
      superseded.clear();
      return dropped;
    }
    if (event.getKind() == EventKind.EVENT_KIND_PART_DELTA) {
      // A listener that joined after a cursor may get deltas of a part it never saw start.
      FoldedNode node = nodes.get(idx);
      Part part = node == null ? null : node.response.get(event.getEventIdx());
      if (part != null) {
        part.content.append(event.getContentDelta());
      }
      return false;
    }
    FoldedNode node = nodes.computeIfAbsent(idx, i -> new FoldedNode());
    if (event.getKind() == EventKind.EVENT_KIND_PART_START) {
      Part part = new Part(event);
      if (event.hasEventIdx()) {
        node.response.put(event.getEventIdx(), part); // a part sent again replaces the one before
      } else {
        node.returns.add(part);
      }
    }
    return false;
  }

  /** The nodes in {@code idx} order. */
  public List<Node> nodes() {
    List<Node> out = new ArrayList<>();
    nodes.forEach(
        (idx, folded) -> {
          List<Part> parts = new ArrayList<>(folded.response.values());
          parts.addAll(folded.returns);
          out.add(new Node(idx, parts));
        });
    return out;
  }

  /** The attempt the run goes on as: 1 until a worker died and another resumed it. */
  public int attempt() {
    return attempt;
  }

  /**
   * The body of the last {@code error} event as its JSON (e.g. {@code {"msg": "canceled"}}), or
   * empty: the client has no JSON library, so parse it with yours.
   */
  public Optional<String> error() {
    return Optional.ofNullable(error);
  }

  /** Whether the run's {@code end} came. */
  public boolean ended() {
    return ended;
  }

  /** The text parts' content, node after node: what the run has answered so far. */
  public String text() {
    StringBuilder text = new StringBuilder();
    for (Node node : nodes()) {
      for (Part part : node.parts) {
        if (part.partKind == PartKind.PART_KIND_TEXT) {
          text.append(part.content);
        }
      }
    }
    return text.toString();
  }
}
