package io.github.pydanticaistream;

import com.google.protobuf.Struct;
import com.google.protobuf.Value;
import io.github.pydanticaistream.client.Transcript;
import io.github.pydanticaistream.v1.Event;
import io.github.pydanticaistream.v1.EventKind;
import io.github.pydanticaistream.v1.EventType;
import io.github.pydanticaistream.v1.PartKind;
import io.github.pydanticaistream.v1.ToolOutcome;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.OptionalInt;
import java.util.stream.Collectors;

/**
 * Folds constructed events into a {@link Transcript}: the output so far, without what a resumed
 * run superseded. Run by clients/java/test; exits 1 if a check fails.
 */
public final class TranscriptTest {
  private static void check(boolean ok, String what) {
    if (!ok) {
      throw new AssertionError(what);
    }
  }

  private static Event.Builder agentEvent(int idx, EventKind kind) {
    return Event.newBuilder()
        .setType(EventType.EVENT_TYPE_EVENT)
        .setTypeName("event")
        .setOrigin("pydantic-ai")
        .setIdx(idx)
        .setKind(kind);
  }

  private static Event nodeBegin(int idx) {
    return agentEvent(idx, EventKind.EVENT_KIND_LLM_BEGIN).build();
  }

  private static Event text(int idx, int eventIdx, String content) {
    return agentEvent(idx, EventKind.EVENT_KIND_PART_START)
        .setEventIdx(eventIdx)
        .setPartKind(PartKind.PART_KIND_TEXT)
        .setPartKindName("text")
        .setContent(content)
        .build();
  }

  private static Event delta(int idx, int eventIdx, String delta) {
    return agentEvent(idx, EventKind.EVENT_KIND_PART_DELTA)
        .setEventIdx(eventIdx)
        .setPartKind(PartKind.PART_KIND_TEXT)
        .setPartDeltaKind(PartKind.PART_KIND_TEXT)
        .setContentDelta(delta)
        .build();
  }

  private static Event resumed(int idx, int attempt) {
    return agentEvent(idx, EventKind.EVENT_KIND_RESUMED).setOrigin("pydantic-ai-stream").setAttempt(attempt).build();
  }

  private static Event runtime(EventType type, String typeName, String bodyJson) {
    return Event.newBuilder().setType(type).setTypeName(typeName).setOrigin("pydantic-ai-stream").setBodyJson(bodyJson).build();
  }

  private static final Event BEGIN = runtime(EventType.EVENT_TYPE_BEGIN, "begin", "{\"run_id\": \"r\"}");
  private static final Event END = runtime(EventType.EVENT_TYPE_END, "end", "{}");
  private static final Struct ARGS =
      Struct.newBuilder().putFields("text", Value.newBuilder().setStringValue("a b").build()).build();
  private static final List<Event> NODE_0 =
      List.of(
          nodeBegin(0),
          text(0, 0, "Hel"),
          delta(0, 0, "lo"),
          agentEvent(0, EventKind.EVENT_KIND_PART_START)
              .setEventIdx(1)
              .setPartKind(PartKind.PART_KIND_TOOL_CALL)
              .setPartKindName("tool-call")
              .setToolName("count_words")
              .setToolCallId("call-1")
              .setArgs(ARGS)
              .build(),
          agentEvent(0, EventKind.EVENT_KIND_LLM_END).build(),
          agentEvent(0, EventKind.EVENT_KIND_PART_START)
              .setPartKind(PartKind.PART_KIND_TOOL_RETURN)
              .setPartKindName("tool-return")
              .setToolName("count_words")
              .setToolCallId("call-1")
              .setContent("2")
              .build());
  private static final List<Event> NODE_1_PARTIAL = List.of(nodeBegin(1), text(1, 0, "par"), delta(1, 0, "tial"));

  /** {@code begin}, node 0, then {@code more}. */
  private static List<Event> node0After(List<Event> more) {
    List<Event> events = new ArrayList<>(List.of(BEGIN));
    events.addAll(NODE_0);
    events.addAll(more);
    return events;
  }

  /** What each {@code apply} returned, in order. */
  private static List<Boolean> fold(Transcript transcript, List<Event> events) {
    List<Boolean> superseded = new ArrayList<>();
    for (Event event : events) {
      superseded.add(transcript.apply(event));
    }
    return superseded;
  }

  private static boolean none(List<Boolean> superseded) {
    return !superseded.contains(true);
  }

  static void resumeDropsTheSupersededNodeAndTheRedoneOneFollows() {
    Transcript transcript = new Transcript();
    check(none(fold(transcript, node0After(NODE_1_PARTIAL))), "nothing superseded before");
    check(transcript.text().equals("Hellopartial"), "text: " + transcript.text());

    check(transcript.apply(resumed(1, 2)), "the resume superseded node 1");
    check(transcript.nodes().size() == 1 && transcript.nodes().get(0).idx() == 0, "node 1 is gone");
    check(transcript.text().equals("Hello"), "text: " + transcript.text());
    check(transcript.attempt() == 2, "attempt 2");

    List<Event> redone =
        List.of(
            nodeBegin(1),
            text(1, 0, "final"),
            agentEvent(1, EventKind.EVENT_KIND_ANSWER).build(),
            agentEvent(1, EventKind.EVENT_KIND_LLM_END).build(),
            END);
    check(none(fold(transcript, redone)), "nothing superseded after");
    check(transcript.text().equals("Hellofinal"), "text: " + transcript.text());
    check(transcript.attempt() == 2 && transcript.ended() && transcript.error().isEmpty(), "attempt 2, ended");

    List<Transcript.Part> parts = transcript.nodes().get(0).parts();
    check(parts.size() == 3, "three parts: " + parts.size());
    Transcript.Part text = parts.get(0);
    Transcript.Part call = parts.get(1);
    Transcript.Part ret = parts.get(2);
    check(
        text.partKind() == PartKind.PART_KIND_TEXT
            && text.partKindName().equals("text")
            && text.eventIdx().equals(OptionalInt.of(0))
            && text.content().equals("Hello"),
        "the text part");
    check(
        call.partKind() == PartKind.PART_KIND_TOOL_CALL
            && call.eventIdx().equals(OptionalInt.of(1))
            && call.toolName().equals("count_words")
            && call.toolCallId().equals("call-1")
            && call.args().equals(ARGS),
        "the tool call");
    check(
        ret.partKind() == PartKind.PART_KIND_TOOL_RETURN
            && ret.eventIdx().isEmpty()
            && ret.content().equals("2")
            && ret.toolCallId().equals("call-1")
            && ret.outcome() == ToolOutcome.TOOL_OUTCOME_UNSPECIFIED,
        "the tool return");
    List<Transcript.Part> redoneParts = transcript.nodes().get(1).parts();
    check(redoneParts.size() == 1 && redoneParts.get(0).content().equals("final"), "node 1 redone");
  }

  static void resumeFromNode0DropsEverything() {
    Transcript transcript = new Transcript();
    fold(transcript, node0After(NODE_1_PARTIAL));
    check(transcript.apply(resumed(0, 2)), "the resume superseded every node");
    check(transcript.nodes().isEmpty() && transcript.text().isEmpty() && transcript.attempt() == 2, "nothing left");
  }

  static void resumeThatSupersedesNothingReturnsFalse() {
    Transcript transcript = new Transcript();
    fold(transcript, node0After(List.of()));
    check(!transcript.apply(resumed(1, 2)), "no node 1 to supersede");
    check(transcript.text().equals("Hello") && transcript.attempt() == 2, "text kept, attempt 2");
    Transcript empty = new Transcript();
    check(empty.attempt() == 1 && !empty.apply(resumed(0, 3)), "an empty transcript: nothing superseded");
  }

  static void deltaOfAPartNeverSeenIsIgnored() {
    Transcript transcript = new Transcript(); // resumed after a cursor: the part's start came before it
    check(none(fold(transcript, List.of(delta(0, 0, "lo"), delta(2, 5, "lo")))), "nothing superseded");
    check(transcript.nodes().isEmpty() && transcript.text().isEmpty(), "nothing folded");
    fold(transcript, List.of(nodeBegin(0), delta(0, 3, "x")));
    check(transcript.nodes().size() == 1 && transcript.nodes().get(0).parts().isEmpty(), "node 0, no part");
  }

  static void partsFollowEventIdxAndAPartSentAgainReplacesIt() {
    Transcript transcript = new Transcript();
    fold(transcript, List.of(nodeBegin(0), text(0, 1, "second"), text(0, 0, "first "), delta(0, 1, "!")));
    check(transcript.text().equals("first second!"), "text: " + transcript.text());
    transcript.apply(text(0, 1, "again"));
    check(transcript.text().equals("first again"), "text: " + transcript.text());
  }

  static void toolReturnsComeAfterTheResponsePartsInArrivalOrder() {
    Transcript transcript = new Transcript();
    Event retried =
        agentEvent(0, EventKind.EVENT_KIND_PART_START)
            .setPartKind(PartKind.PART_KIND_TOOL_RETURN)
            .setPartKindName("tool-return")
            .setContent("no such city")
            .setOutcome(ToolOutcome.TOOL_OUTCOME_RETRIED)
            .build();
    Event prompt =
        agentEvent(0, EventKind.EVENT_KIND_PART_START)
            .setPartKind(PartKind.PART_KIND_OTHER)
            .setPartKindName("retry-prompt")
            .build();
    fold(transcript, List.of(nodeBegin(0), retried, prompt, text(0, 0, "late")));
    List<String> parts =
        transcript.nodes().get(0).parts().stream()
            .map(p -> p.partKindName() + " " + p.eventIdx() + " " + p.outcome())
            .collect(Collectors.toList());
    check(
        parts.equals(
            List.of(
                "text OptionalInt[0] TOOL_OUTCOME_UNSPECIFIED",
                "tool-return OptionalInt.empty TOOL_OUTCOME_RETRIED",
                "retry-prompt OptionalInt.empty TOOL_OUTCOME_UNSPECIFIED")),
        "parts: " + parts);
  }

  static void errorEndBeginAndCustomEventsTouchNoNode() {
    Transcript transcript = new Transcript();
    fold(transcript, List.of(nodeBegin(0), text(0, 0, "Hi")));
    Event custom =
        Event.newBuilder()
            .setType(EventType.EVENT_TYPE_CUSTOM)
            .setTypeName("progress")
            .setOrigin("developer")
            .setBodyJson("{\"pct\": 50}")
            .build();
    Event error = runtime(EventType.EVENT_TYPE_ERROR, "error", "{\"msg\": \"canceled\"}");
    check(none(fold(transcript, List.of(BEGIN, custom, error, END))), "nothing superseded");
    check(transcript.text().equals("Hi") && transcript.ended() && transcript.attempt() == 1, "text kept, ended");
    check(transcript.error().equals(Optional.of("{\"msg\": \"canceled\"}")), "error: " + transcript.error());
  }

  public static void main(String[] args) {
    Map<String, Runnable> checks = new LinkedHashMap<>();
    checks.put("a resume drops the superseded node and the redone one follows", TranscriptTest::resumeDropsTheSupersededNodeAndTheRedoneOneFollows);
    checks.put("a resume from node 0 drops everything", TranscriptTest::resumeFromNode0DropsEverything);
    checks.put("a resume that supersedes nothing returns false", TranscriptTest::resumeThatSupersedesNothingReturnsFalse);
    checks.put("a delta of a part never seen is ignored", TranscriptTest::deltaOfAPartNeverSeenIsIgnored);
    checks.put("parts follow eventIdx, and a part sent again replaces it", TranscriptTest::partsFollowEventIdxAndAPartSentAgainReplacesIt);
    checks.put("tool returns come after the response parts, in arrival order", TranscriptTest::toolReturnsComeAfterTheResponsePartsInArrivalOrder);
    checks.put("error, end, begin and custom events touch no node", TranscriptTest::errorEndBeginAndCustomEventsTouchNoNode);
    int failed = 0;
    for (Map.Entry<String, Runnable> entry : checks.entrySet()) {
      try {
        entry.getValue().run();
        System.out.printf("ok   %s%n", entry.getKey());
      } catch (Throwable e) {
        failed += 1;
        System.out.printf("FAIL %s: %s%n", entry.getKey(), e);
      }
    }
    System.exit(failed == 0 ? 0 : 1);
  }
}
