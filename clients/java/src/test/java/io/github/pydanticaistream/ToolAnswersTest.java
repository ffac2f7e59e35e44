package io.github.pydanticaistream;

import com.google.protobuf.Struct;
import com.google.protobuf.TextFormat;
import com.google.protobuf.Value;
import io.github.pydanticaistream.client.ToolAnswers;
import io.github.pydanticaistream.v1.DeferredCall;
import io.github.pydanticaistream.v1.DeferredCallKind;
import io.github.pydanticaistream.v1.Event;
import io.github.pydanticaistream.v1.EventKind;
import io.github.pydanticaistream.v1.ToolAnswer;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** Builds answers to a waiting run and reads its calls. Run by clients/java/test; exits 1 if a check fails. */
public final class ToolAnswersTest {
  private static void check(boolean ok, String what) {
    if (!ok) {
      throw new AssertionError(what);
    }
  }

  private static void same(ToolAnswer got, String want) throws Exception {
    ToolAnswer.Builder expected = ToolAnswer.newBuilder();
    TextFormat.merge(want, expected);
    check(got.equals(expected.build()), "got " + got + ", want " + want);
  }

  public static void main(String[] args) throws Exception {
    same(ToolAnswers.approve("c1"), "tool_call_id: 'c1' approval { approved: true }");
    same(
        ToolAnswers.approve("c1", Map.of("name", "dev")),
        "tool_call_id: 'c1' approval { approved: true override_args { fields { key: 'name' value { string_value: 'dev' } } } }");
    same(ToolAnswers.deny("c1", "no"), "tool_call_id: 'c1' approval { denial_message: 'no' }");
    same(ToolAnswers.retry("c2", "down"), "tool_call_id: 'c2' result { retry: 'down' }");
    Map<String, Object> value = new LinkedHashMap<>();
    value.put("ack", true);
    value.put("n", 2);
    value.put("tags", Arrays.asList("a", null));
    same(
        ToolAnswers.externalResult("c2", value),
        "tool_call_id: 'c2' result { value { struct_value {"
            + " fields { key: 'ack' value { bool_value: true } } fields { key: 'n' value { number_value: 2 } }"
            + " fields { key: 'tags' value { list_value { values { string_value: 'a' } values { null_value: NULL_VALUE } } } } } } }");
    try {
      ToolAnswers.externalResult("c2", new Object());
      check(false, "a value that is not JSON is refused");
    } catch (IllegalArgumentException expected) {
      // refused
    }
    Struct modelArgs = Struct.newBuilder().putFields("name", Value.newBuilder().setStringValue("staging").build()).build();
    Event event =
        Event.newBuilder()
            .setKind(EventKind.EVENT_KIND_INPUT_REQUIRED)
            .addCalls(DeferredCall.newBuilder().setToolCallId("c1").setToolName("drop_db").setArgs(modelArgs).setKind(DeferredCallKind.DEFERRED_CALL_KIND_APPROVAL))
            .addCalls(DeferredCall.newBuilder().setToolCallId("c2").setToolName("page").setKind(DeferredCallKind.DEFERRED_CALL_KIND_EXTERNAL))
            .build();
    List<ToolAnswers.InputCall> calls = ToolAnswers.inputCalls(event);
    check(calls.size() == 2 && calls.get(0).args().equals(Map.of("name", "staging")) && calls.get(1).args().isEmpty(), "args: " + calls);
    check(calls.get(0).kind() == DeferredCallKind.DEFERRED_CALL_KIND_APPROVAL && calls.get(1).toolName().equals("page"), "calls: " + calls);
    check(ToolAnswers.inputCalls(event.toBuilder().setKind(EventKind.EVENT_KIND_PART_START).build()).isEmpty(), "another event");
    System.out.println("ok   answers to a waiting run, and its calls");
  }
}
